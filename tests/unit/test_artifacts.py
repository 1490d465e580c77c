"""The typed artifacts the steps pass each other: each survives a round trip through its file, and a file that lacks
what a reader needs is refused with a message that names the file."""

from __future__ import annotations

import json

import pytest

from components.artifacts import digest_mismatches, read_json, sha256_file, tree_digests
from components.data.split import TimeSplit
from components.evaluate.result import EVALUATION_FILE, Evaluation
from components.index.bundle import INDEX_FILE, IndexBundle
from components.release import ReleaseDecision

pytestmark = pytest.mark.unit

SPLIT = TimeSplit(ranking_start_ms=1_000, train_end_ms=5_000, end_ms=9_000)


def bundle(**changes) -> IndexBundle:
    fields = dict(uri="milvus.db", collection="pins_live", version="pins_v1", count=10, recall_check={"recall@100": 1.0},
                  dim=8, metric="IP", hnsw={"M": 16, "efConstruction": 200}, corpus={"version": 1}, embedding={})  # fmt: skip
    return IndexBundle(**(fields | changes))


def test_the_time_split_comes_back_from_its_json_form_and_from_a_dict():
    assert TimeSplit.from_json(json.loads(json.dumps(SPLIT.to_json()))) == SPLIT
    assert TimeSplit.of(SPLIT.to_json()) == SPLIT and TimeSplit.of(SPLIT) is SPLIT


def test_an_evaluation_round_trips_and_flattens_to_named_figures(tmp_path):
    ev = Evaluation(SPLIT, {"recall": {"100": 0.4}, "popularity_recall": {"100": 0.1}}, {"hit@3_repin": 0.5})
    ev.write(tmp_path)
    assert Evaluation.read(tmp_path) == ev
    assert ev.flat() == {"recall@100": 0.4, "recall@100_popularity": 0.1, "hit@3_repin": 0.5}
    with pytest.raises(FileNotFoundError, match=EVALUATION_FILE):
        Evaluation.read(tmp_path / "elsewhere")


def test_an_index_bundle_round_trips_makes_a_lite_uri_absolute_and_keeps_unknown_keys(tmp_path):
    bundle(search_ef=128, extra={"note": "from a newer writer"}).write(tmp_path)
    read = IndexBundle.read(tmp_path)
    assert read.uri == str((tmp_path / "milvus.db").resolve()) and read.search_ef == 128
    assert read.extra == {"note": "from a newer writer"} and read.to_json()["note"] == "from a newer writer"
    server = bundle(uri="http://milvus:19530", alias="pins_live")
    server.write(tmp_path)
    assert IndexBundle.read(tmp_path) == server  # a server's uri is left as it is
    assert "search_ef" not in server.to_json()  # absent means the searcher's default


def test_an_index_file_without_a_corpus_is_refused(tmp_path):
    data = bundle().to_json()
    del data["corpus"]
    (tmp_path / INDEX_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"index.json lacks \['corpus'\]"):
        IndexBundle.read(tmp_path)


def test_a_release_decision_round_trips_and_names_its_verdict(tmp_path):
    decision = ReleaseDecision(False, ["checked", "not deployed: recall"], "no champion", {"recall@100": 0.3})
    decision.write(tmp_path)
    assert ReleaseDecision.read(tmp_path) == decision and decision.verdict == "not deployed: recall"


def test_tree_digests_hash_what_a_bundle_copy_keeps_and_mismatches_name_the_file(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "examples.npz").write_bytes(b"scratch")
    (tmp_path / "LOCK").write_bytes(b"")
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "config.json").write_text("{}")
    gated = tree_digests(tmp_path, "ranking", ignore=("LOCK", "work"))
    assert gated == {"ranking/model.pt": sha256_file(tmp_path / "model.pt"),
                     "ranking/sub/config.json": sha256_file(tmp_path / "sub" / "config.json")}  # fmt: skip
    assert digest_mismatches(gated, dict(gated)) == []
    (tmp_path / "model.pt").write_bytes(b"garbage")
    (tmp_path / "sub" / "config.json").unlink()
    (tmp_path / "extra.bin").write_bytes(b"x")
    problems = digest_mismatches(gated, tree_digests(tmp_path, "ranking", ignore=("LOCK", "work")))
    assert [p.split(":")[0] for p in problems] == ["ranking/model.pt", "ranking/sub/config.json", "ranking/extra.bin"]
    assert "changed since" in problems[0] and problems[1].endswith("missing") and "added" in problems[2]


def test_an_artifact_file_that_is_not_json_is_named(tmp_path):
    (tmp_path / "decision.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"decision\.json: the release decision is not valid JSON"):
        read_json(tmp_path, "decision.json", "release decision")
