"""The Redis online store (the cluster's) against a real redis-server: the same rows as SQLite, the stream path, the
features step, and a cluster feature_store.yaml that Feast accepts. Skipped with the reason when redis-server is
absent (see the `redis_server` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from feast import FeatureStore
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.registry.s3 import S3RegistryStore
from feast.repo_config import load_repo_config

from components.data.dataset import Dataset
from components.features.online_store import PASSWORD_ENV, local_redis, parse_online_store, redis_available
from components.features.repo import DEFINITIONS
from components.features.sequence import ActionLog
from components.features.store import build_feature_store, online_pin_features, online_user_features, push_sequences
from components.features.tables import sequence_table
from components.stream.bus import open_bus
from components.stream.processor import StreamProcessor
from components.stream.redis_source import RedisStreamSource
from components.stream.sources import open_source
from pipelines import steps

# The cluster's Feast configuration lives with the manifests that mount it (ConfigMap homefeed-feature-store).
CLUSTER_CONFIG = Path(__file__).resolve().parents[2] / "manifests" / "base" / "features" / "feature_store.yaml"

pytestmark = pytest.mark.integration


def _keys(spec: str) -> int:
    server = parse_online_store(spec)
    return redis.Redis(host=server.host, port=server.port, db=server.db).dbsize()


def test_redis_store_serves_the_same_rows_as_sqlite(tiny_world, tmp_path, redis_store):
    on_redis = build_feature_store(tiny_world, tmp_path / "redis", online_store=redis_store)
    on_sqlite = build_feature_store(tiny_world, tmp_path / "sqlite")
    users = Dataset(tiny_world).read("users")["user_id"].tolist() + [10**9]  # and one the store does not know
    pins = Dataset(tiny_world).read("pins")["pin_id"].tolist()[:300]
    got = online_user_features(on_redis, users)
    assert got["seq_len"].notna().sum() == len(users) - 1  # every known user has a row, in Redis
    pd.testing.assert_frame_equal(got, online_user_features(on_sqlite, users))
    pd.testing.assert_frame_equal(online_pin_features(on_redis, pins), online_pin_features(on_sqlite, pins))
    assert not (tmp_path / "redis" / "data" / "online_store.db").exists()
    assert "type: redis" in (tmp_path / "redis" / "feature_store.yaml").read_text()


def test_a_rebuild_removes_rows_of_the_earlier_build(tiny_world, tmp_path, redis_store):
    events = Dataset(tiny_world).read("events")
    store = build_feature_store(tiny_world, tmp_path / "fs", online_store=redis_store)
    stranger = 10**6  # a user the dataset does not have, pushed by hand as a stream would
    push_sequences(store, sequence_table(ActionLog(events), np.array([stranger]), int(events["ts"].max())))
    assert online_user_features(store, [stranger])["seq_len"].tolist() == [0]
    store = build_feature_store(tiny_world, tmp_path / "fs", online_store=redis_store)
    assert online_user_features(store, [stranger])["seq_len"].isna().all()  # gone, as a new SQLite file would be


def test_stream_processor_on_redis_ends_at_the_action_log(tiny_world, tmp_path, redis_store):
    events = Dataset(tiny_world).read("events")
    store = build_feature_store(tiny_world, tmp_path / "fs", as_of_ts=int(events["ts"].min()), online_store=redis_store)
    StreamProcessor(store, tmp_path / "ckpt.json", batch=2_000).run(open_source(Dataset(tiny_world).path("events")))
    users = np.sort(events["user_id"].unique())
    end = int(events["ts"].max()) + 1
    want = ActionLog(events).sequences_at(users, np.full(len(users), end))
    got = online_user_features(store, users.tolist())
    for i, row in enumerate(got.itertuples(index=False)):
        n = int(want.lengths[i])
        # a user whose events were all impressions was never pushed: no row, read as an empty sequence
        assert list(row.seq_pin_ids or []) == want.pin_ids[i, :n].tolist()
        assert list(row.seq_actions or []) == want.actions[i, :n].tolist()
        assert list(row.seq_ts or []) == want.ts[i, :n].tolist()


def test_features_step_on_redis_streams_and_checks_parity(tiny_world, tmp_path, redis_store):
    summary = steps.build_features(tiny_world, tmp_path / "features", online_store=redis_store)
    n_users = len(Dataset(tiny_world).read("users"))
    assert summary["parity_users"] == n_users and summary["parity_mismatches"] == 0
    assert summary["stream_events"] == len(Dataset(tiny_world).read("events"))
    job = json.loads((tmp_path / "features" / "stream" / "summary.json").read_text())
    assert job["counters"]["events_in"] == summary["stream_events"] and job["counters"]["pushes"] >= 1
    assert _keys(redis_store) > 0


def test_feast_accepts_the_cluster_configuration(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "f00d")  # as the pods have it, from the Secret homefeed-redis
    config = load_repo_config(DEFINITIONS, CLUSTER_CONFIG)
    assert isinstance(config.online_store, RedisOnlineStoreConfig)
    assert config.online_store.connection_string.endswith(",password=f00d")
    assert config.online_store.skip_dedup  # as the pipeline's Redis stores: last write wins (see online_store.py)
    assert config.registry.path.startswith("s3://")
    from feast.infra.registry.registry import get_registry_store_class_from_scheme

    assert get_registry_store_class_from_scheme(config.registry.path) is S3RegistryStore
    assert config.offline_store.type in {"file", "dask"}


def test_a_bad_online_store_spec_is_refused_with_what_is_accepted(tiny_world, tmp_path):
    for spec in ("redis", "redis://host:port", "redis://host:6379/x", "postgres://h/0"):
        with pytest.raises(ValueError, match="redis://HOST:PORT|database must be a number|Port"):
            build_feature_store(tiny_world, tmp_path / "fs", online_store=spec)
    assert not (tmp_path / "fs").exists()  # refused before anything was written


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory):
    """A redis-server of this module's own that requires a password, as the cluster's does (manifests/base/features/
    redis.yaml); yields (url, password)."""
    if not redis_available():
        pytest.skip("redis-server is not installed (Debian package redis-server, which .ci/run installs)")
    password = "0123abcd-._~"
    with local_redis(tmp_path_factory.mktemp("redis-auth"), password=password) as url:
        yield url, password


def test_a_redis_with_a_password_takes_the_one_in_the_environment(tiny_world, tmp_path, redis_with_password,
                                                                 monkeypatch):  # fmt: skip
    url, password = redis_with_password
    with pytest.raises(redis.AuthenticationError):  # the server refuses a client without it
        redis.Redis.from_url(url).ping()
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(redis.AuthenticationError):  # and the features step, without REDIS_PASSWORD, fails on it
        steps.build_features(tiny_world, tmp_path / "without", online_store=url)

    monkeypatch.setenv(PASSWORD_ENV, password)
    steps.build_features(tiny_world, tmp_path / "features", online_store=url)
    written = (tmp_path / "features" / "feature_store.yaml").read_text()
    assert "password=${REDIS_PASSWORD}" in written and password not in written  # named, never written
    store = FeatureStore(repo_path=str(tmp_path / "features"))  # a reader expands it from its own environment
    users = Dataset(tiny_world).read("users")["user_id"].tolist()[:20]
    assert online_user_features(store, users)["seq_len"].notna().sum() >= 10  # users with events before the cutoff

    # the event bus and the stream processor's source, on the same Redis, read the same variable
    bus = open_bus(url + "?shards=2")
    assert bus.unready() is None
    assert bus.publish([{"event_id": "a1", "user_id": users[0], "pin_id": 5, "action": "click", "ts": 1}]) == 1
    source = RedisStreamSource(url + "?shards=2", block_ms=50)
    assert source.where.url == url
    bus.close()

    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    assert "WRONGPASS" in (open_bus(url).unready() or "") or "invalid" in (open_bus(url).unready() or "")


@pytest.mark.parametrize("spec", ["redis://:s3cret@cache:6379/0", "redis://user:s3cret@cache/0"])
def test_credentials_in_a_redis_url_are_refused_without_echoing_them(spec):
    for parse in (parse_online_store, open_bus):
        with pytest.raises(ValueError, match="REDIS_PASSWORD") as caught:
            parse(spec)
        assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("bad", ["has,comma", "has space", "dollar$", "x" * 257])
def test_a_password_feast_could_not_carry_is_refused_without_echoing_it(bad, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, bad)
    with pytest.raises(ValueError, match="REDIS_PASSWORD may hold only") as caught:
        parse_online_store("redis://cache:6379/0").feast_config()
    assert bad not in str(caught.value)
