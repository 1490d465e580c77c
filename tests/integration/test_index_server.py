"""The index step publishing to a Milvus server (`index_uri`), against two real servers on loopback, a
`milvus-lite server` and the Milvus standalone server (`milvus-server`, components/index/servers.py): what index.json
records, that a bundle searches its own version while the alias moves on, and MILVUS_TOKEN's plumbing.

Neither server here has authentication on (the standalone's default), so a refused token (MilvusAuthError) is not
exercised; the token's plumbing is checked on the client pymilvus builds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.data.split import time_split
from components.index import milvus
from components.index.bundle import INDEX_FILE, MILVUS_FILE, IndexBundle
from components.index.client import TOKEN_ENV, client_for
from components.index.servers import local_milvus, milvus_standalone
from components.index.versions import live_collection
from components.train.retrieval import RetrievalTraining, train_retrieval_local
from pipelines import steps

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def retrieval_model(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("retrieval")
    opts = RetrievalTraining(epochs=1, batch_size=256)
    train_retrieval_local(tiny_world, out, time_split(tiny_world).train_end_ms, opts)
    return out


@pytest.fixture(scope="module", params=["milvus-lite server", "milvus standalone"])
def server(request, tmp_path_factory):
    """Each test runs against both servers: Milvus Lite behind gRPC, and the Milvus standalone server."""
    start = local_milvus if request.param == "milvus-lite server" else milvus_standalone
    with start(tmp_path_factory.mktemp("milvus")) as uri:
        yield uri


@pytest.fixture(scope="module")
def published(tiny_world, retrieval_model, server, tmp_path_factory):
    """Two bundles indexed one after the other onto the same server: {"first", "second"} -> index directory."""
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("first", "second")}
    for out in dirs.values():
        steps.index_pins(tiny_world, retrieval_model, out, index_uri=server)
    return dirs


def test_index_json_names_the_server_and_the_version_this_bundle_built(published, server):
    info = json.loads((published["first"] / INDEX_FILE).read_text())
    assert info["uri"] == server
    assert info["collection"] == info["version"] == "pins_v1" and info["alias"] == "pins_live"
    assert not (published["first"] / MILVUS_FILE).exists()  # nothing local: the server holds the index
    assert milvus.count(server, "pins_v1") == info["count"] == info["corpus"]["counts"]["served"]


def test_reading_the_bundle_leaves_a_server_uri_as_it_is(published, server):
    assert IndexBundle.read(published["first"]).uri == server


def test_a_search_with_index_json_returns_the_bundles_pins(published, server):
    bundle = IndexBundle.read(published["first"])
    some = client_for(bundle.uri).query(bundle.collection, filter="", output_fields=["embedding"], limit=3)
    queries = np.array([row["embedding"] for row in some], dtype=np.float32)
    hits = milvus.search(bundle.uri, bundle.collection, queries, k=5)
    assert [h[0]["pin_id"] for h in hits] == [row["pin_id"] for row in some]  # each pin's own vector finds it
    assert all(len(h) == 5 for h in hits)


def test_the_alias_moves_on_but_the_serving_bundle_keeps_its_version(published, server):
    first, second = (json.loads((published[n] / INDEX_FILE).read_text()) for n in ("first", "second"))
    assert second["collection"] == "pins_v2" and live_collection(server, "pins_live") == "pins_v2"
    # the first bundle's predictor, still serving during the second's rollout, still finds its collection
    assert first["collection"] == "pins_v1" and milvus.count(server, "pins_v1") == first["count"]


def test_the_default_is_still_a_milvus_lite_file_behind_the_alias(tiny_world, retrieval_model, tmp_path):
    info = steps.index_pins(tiny_world, retrieval_model, tmp_path / "index")
    assert info["uri"] == MILVUS_FILE and info["collection"] == "pins_live" and "alias" not in info
    assert IndexBundle.read(tmp_path / "index").uri == str((tmp_path / "index" / MILVUS_FILE).resolve())


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("milvus:19530", r"index_uri must be http\(s\)://host:port of a Milvus server, got 'milvus:19530'"),
        ("http://root:s3cret@milvus:19530", r"index_uri must not carry credentials: set them in \$MILVUS_TOKEN"),
    ],
)
def test_a_bad_index_uri_is_refused_before_any_work(tiny_world, retrieval_model, tmp_path, uri, message):
    with pytest.raises(ValueError, match=message) as err:
        steps.index_pins(tiny_world, retrieval_model, tmp_path / "index", index_uri=uri)
    assert "s3cret" not in str(err.value)
    assert not (tmp_path / "index").exists()  # no corpus, no embedding: refused before the first step


def test_a_server_client_carries_milvus_token(published, server, monkeypatch):
    # `_config` is pymilvus' own record of what the client was built with (there is no public accessor); another
    # spelling of the server's address gives a client not yet cached.
    monkeypatch.setenv(TOKEN_ENV, "homefeed:not-a-real-password")
    with_token = client_for(server.replace("127.0.0.1", "localhost"))
    assert with_token._config.token == "homefeed:not-a-real-password"
    assert "pins_v1" in with_token.list_collections()  # the token travels; milvus-lite server ignores it
    monkeypatch.delenv(TOKEN_ENV)
    assert client_for(server)._config.token == ""  # MILVUS_TOKEN unset: no token
