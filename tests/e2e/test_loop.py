"""The whole loop on a tiny world, as `homefeed demo` runs it: homefeed_training through kfp.local, then the three
model servers on its artifacts, a REST call to the homefeed endpoint, and the artifacts checked for real content."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest

from components.cluster.launcher import free_ports, running_servers, wait_until_ready
from components.data.dataset import Dataset
from components.data.split import time_split
from components.index.bundle import IndexBundle
from components.index.corpus import read_corpus
from components.index.milvus import count
from components.metrics import hit_at_k
from components.train.examples import Catalog, ranking_examples, read_events
from components.train.ranking import load_pinnability, score
from components.train.retrieval import load_two_tower, pin_embeddings
from homefeed.serve_commands import server_specs
from monitoring.drift import DRIFT_SUMMARY
from pipelines.compile import golden
from pipelines.params import PipelineParams

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FEED_SIZE = 10
PARAMS = PipelineParams(source="world:tiny")  # the time split: the shared run keeps its defaults


@pytest.fixture(scope="module")
def run(tiny_run):
    """The session's run (tests/e2e/conftest.py); these tests start servers of their own on its artifacts."""
    return tiny_run.run


def test_every_step_ran_and_the_run_is_versioned(run):
    assert run.status == "succeeded"
    assert {s.name for s in run.steps} == {
        "data", "features", "pretrain-ids", "train-retrieval", "train-ranking", "evaluate", "gate", "index", "deploy",
        "monitor",
    }  # fmt: skip
    assert all(s.status == "SUCCESS" and s.seconds > 0 for s in run.steps)
    assert (run.run_dir / "pipeline.yaml").read_text() == golden("homefeed_training").read_text()
    assert "Task 'train-ranking' finished" in (run.run_dir / "pipeline.log").read_text()
    # KFP Metrics live in the artifact's metadata, not in a file
    for name in set(run.artifacts) - {"metrics", "gate_metrics"}:
        assert run.path(name).exists() and run.path(name).is_relative_to(run.run_dir), name


def test_both_models_load_and_score(run):
    ds = Dataset(run.path("dataset"))
    cat = Catalog.load(ds)
    pins = pin_embeddings(load_two_tower(run.path("retrieval_model")), cat)
    assert pins.shape[0] == cat.n_pins and np.isfinite(pins).all() and pins.std(axis=0).max() > 0
    model, user_emb = load_pinnability(run.path("ranking_model"))
    split = time_split(ds.root, PARAMS.holdout_days, PARAMS.ranking_days)
    ev, log = read_events(ds)
    ex = ranking_examples(ev, cat, log, split.train_end_ms, split.end_ms, max_examples=None, seed=0)
    probs = score(model, user_emb, ex)
    assert probs.shape == (len(ex["labels"]), 3) and ((probs > 0) & (probs < 1)).all() and probs.std(axis=0).min() > 0
    # the evaluation step's figure is what these scores give
    metrics = run.artifacts["metrics"]["metadata"]
    assert metrics["hit@3_repin"] == pytest.approx(hit_at_k(ex["request_id"], probs[:, 1], ex["labels"][:, 1]))
    evaluation = json.loads((run.path("evaluation") / "evaluation.json").read_text())
    assert evaluation["retrieval"]["users"] > 0 and 0 <= evaluation["retrieval"]["recall"]["100"] <= 1


def test_homefeed_over_rest_excludes_hidden_pins(run, tmp_path):
    ds = Dataset(run.path("dataset"))
    ev = ds.read("events", columns=["user_id", "pin_id", "action"])
    hidden = ev[ev.action == "hide"].groupby("user_id").pin_id.apply(set)
    # The corpus leaves out pins whose hides outweigh their engagement, so only hides of corpus pins can come back
    # from retrieval: take the users with the most of those, or the exclusion below would not be exercised.
    corpus = set(read_corpus(run.path("pin_index") / "corpus")[0].pin_id.tolist())
    hidden_served = hidden.apply(lambda pins: len(pins & corpus)).sort_values(ascending=False, kind="stable")
    users = [int(u) for u in hidden_served.index[:20]]
    with running_servers(server_specs(run, candidates=100), tmp_path / "logs") as urls:
        body = {"instances": [{"user_id": u, "n": FEED_SIZE} for u in users]}
        response = httpx.post(f"{urls['homefeed']}/v1/models/homefeed:predict", json=body, timeout=60)
        bad = httpx.post(f"{urls['homefeed']}/v1/models/homefeed:predict", json={"instances": [{"n": 3}]}, timeout=60)
    assert response.status_code == 200, response.text
    feeds = response.json()["predictions"]
    assert [f["user_id"] for f in feeds] == users
    for user, feed in zip(users, feeds, strict=True):
        ids = [p["pin_id"] for p in feed["pins"]]
        assert len(ids) == FEED_SIZE == len(set(ids)), user
        assert not set(ids) & hidden[user], f"user {user} was shown a pin they hid"
        scores = [p["score"] for p in feed["pins"]]
        assert scores == sorted(scores, reverse=True)
    # the filter did work: retrieval found hidden pins among some users' candidates and dropped them
    assert sum(f["hidden_excluded"] for f in feeds) > 0
    assert bad.status_code == 400 and "user_id" in bad.text


def test_homefeed_serve_keeps_a_server_running_on_the_run(run, tmp_path):
    port = free_ports(1)[0]
    cmd = [sys.executable, "-m", "homefeed.cli", "serve", "ranking", "--run", str(run.run_dir), "--port", str(port)]
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, "ranking", timeout_s=120, process=process, log=tmp_path / "serve.log")
        ev = Dataset(run.path("dataset")).read("events", columns=["user_id"])
        user = int(ev.user_id.iloc[-1])
        # ranking scores pins of the serving corpus (retrieval's candidates come from it)
        pins = sorted(read_corpus(run.path("pin_index") / "corpus")[0].pin_id.tolist()[:3])
        body = {"instances": [{"user_id": user, "candidates": pins}]}
        response = httpx.post(f"{url}/v1/models/ranking:predict", json=body, timeout=30)
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        assert sorted(s["pin_id"] for s in prediction["scores"]) == pins and prediction["unscored"] == []
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_milvus_serves_the_corpus_version_through_the_alias(run):
    # after the servers have stopped: Milvus Lite lets one process at a time open the index file
    ds = Dataset(run.path("dataset"))
    end = ds.read("events", columns=["ts"])["ts"].max() + 1
    existing = (ds.read("pins", columns=["created_ts"])["created_ts"] < end).sum()
    info = IndexBundle.read(run.path("pin_index")).to_json()
    corpus, manifest = read_corpus(run.path("pin_index") / "corpus")
    assert (info["collection"], info["version"]) == ("pins_live", "pins_v1")
    assert count(info["uri"], info["collection"]) == len(corpus) == info["corpus"]["counts"]["served"]
    assert 0 < len(corpus) < existing == manifest["counts"]["existing"]  # never-engaged old pins are not served
    assert info["recall_check"]["recall@100"] >= 0.95


def test_drift_report_has_the_engagement_rates(run):
    summary = json.loads((run.path("drift") / DRIFT_SUMMARY).read_text())
    assert set(summary["actions"]) == {"repin", "click", "hide"}
    for action, v in summary["actions"].items():
        assert 0 < v["reference_rate"] < 1 and 0 < v["current_rate"] < 1, action
        assert 0 <= v["drift_score"] <= 1 and isinstance(v["drift_detected"], bool), action
    assert isinstance(summary["drift_detected"], bool) and summary["model"] is None
    assert {"repin_flag", "repin_flag_core", "interest", "seq_len"} <= set(summary["drift"])
    (folder,) = (p for p in run.path("drift").iterdir() if p.is_dir())  # the window's, named by its end
    assert summary["html"] == str(folder / "report.html") and summary["json"] == str(folder / "report.json")
    report = json.loads((folder / "report.json").read_text())
    assert report["metrics"], "the Evidently snapshot holds no metrics"
    assert "repin" in run.path("drift_html").read_text()


def test_the_demo_prints_the_drift_summary_and_the_report_path(run):
    from rich.console import Console

    from homefeed.demo import print_drift

    console = Console(record=True, width=500)  # wide enough that the report path is not wrapped
    summary = print_drift(run, console)
    text = console.export_text()
    assert "engagement drift" in text and "z-test p" in text and "non-core" in text
    for action, v in summary["actions"].items():
        assert action in text and f"{v['current_rate']:.4f}" in text
    assert f"drift report: {summary['html']}" in text
