"""Nothing unverified is promoted: the gate hashes the files it passed, and the deploy step refuses a bundle whose
files are not those bytes or whose models do not load in a fresh process, before anything is registered; a first
model is held to the evaluation's baselines; a champion that does not load is no bar to compare with.

The models are real but tiny (built here, not trained: the loaders do not care how good the weights are), and the
evaluation figures are written by hand, so that each test decides what the gate sees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from components import release
from components.artifacts import sha256_file
from components.data.split import TimeSplit
from components.evaluate.result import EVALUATION_FILE, Evaluation
from components.gate import GatePolicy
from components.registry import Registry
from models.ranking import pinnability
from models.ranking.pinnability import Pinnability, PinnabilityConfig
from models.ranking.sequence import SequenceConfig
from models.retrieval.two_tower import TwoTower, TwoTowerConfig

pytestmark = pytest.mark.integration

SPLIT = TimeSplit(ranking_start_ms=1_000, train_end_ms=5_000, end_ms=9_000)
# Figures that beat both baselines on every gated metric (hides: fewer on top than a random order)
GOOD = {"recall": {"10": 0.15, "100": 0.34}, "popularity_recall": {"10": 0.08, "100": 0.24}}
RANKING = {"hit@3_repin": 0.42, "hit@3_repin_random": 0.30, "hit@3_click": 0.40, "hit@3_click_random": 0.31,
           "hit@3_hide": 0.23, "hit@3_hide_random": 0.33}  # fmt: skip
# The audit's first model: recall@100 far below what recommending the most popular pins achieves
WEAK = {"recall": {"10": 0.03, "100": 0.080}, "popularity_recall": {"10": 0.08, "100": 0.334}}
FLOOR_OFF = json.dumps(GatePolicy.default().to_dict() | {"first_model": {"beat_baselines": False}})


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A retrieval and a ranking model folder as training leaves them (weights, config, training scratch)."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tower_cfg = TwoTowerConfig(n_users=10, n_pins=20, n_interests=4, id_dim=8, field_dim=8, out_dim=8, hidden=(16,))
    retrieval = root / "retrieval"
    retrieval.mkdir()
    torch.save(TwoTower(tower_cfg, torch.randn(20, 8)).state_dict(), retrieval / "model.pt")
    (retrieval / "config.json").write_text(json.dumps(tower_cfg.to_dict()))
    seq = SequenceConfig(action_dim=4, first_k=3, seq_len=6, n_heads=2, ffn_dim=16)
    rank_cfg = PinnabilityConfig(n_interests=4, hidden=(16,), cross_rank=8, sequence=seq)
    ranking = root / "ranking"
    pinnability.export(Pinnability(rank_cfg, torch.randn(20, 8), user_dim=6), ranking)
    np.save(ranking / "user_embeddings.npy", np.zeros((10, 6), dtype=np.float32))
    (ranking / "work").mkdir()  # scratch: neither hashed nor shipped
    (ranking / "work" / "examples.npz").write_bytes(b"scratch")
    return root


class Run:
    """One run's artifact folders and the release steps over them, against a shared registry."""

    def __init__(self, models: Path, root: Path, registry: Path, retrieval: dict = GOOD) -> None:
        self.root, self.registry = root, registry
        self.retrieval, self.ranking = root / "retrieval", root / "ranking"
        for part in ("retrieval", "ranking"):
            shutil.copytree(models / part, root / part)
        self.evaluation, self.index, self.gate_dir = root / "evaluation", root / "index", root / "gate"
        Evaluation(SPLIT, retrieval, dict(RANKING)).write(self.evaluation)
        self.index.mkdir()
        (self.index / "index.json").write_text("{}")

    def gate(self, policy: str = "") -> dict:
        # no dataset: a champion that loads cannot be re-evaluated here, so its registered figures are the bar
        return release.gate_step(self.root / "no-dataset", self.evaluation, self.gate_dir, SPLIT, str(self.registry),
                                 "run", policy, retrieval_dir=self.retrieval, ranking_dir=self.ranking)  # fmt: skip

    def deploy(self) -> dict:
        return release.deploy_step(self.retrieval, self.ranking, self.index, self.evaluation, self.root,
                                   self.gate_dir, self.root / "deployment", str(self.registry), "none", "run")  # fmt: skip


@pytest.fixture
def registry(tmp_path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def run(models, tmp_path, registry) -> Run:
    return Run(models, tmp_path / "run", registry)


def champion_v1(models: Path, tmp_path: Path, registry: Path) -> Registry:
    """A first model gated and deployed as a run does: version 1, the champion."""
    first = Run(models, tmp_path / "first", registry)
    assert first.gate()["deploy"]
    assert first.deploy()["version"] == 1
    return Registry(registry)


def test_the_gate_records_the_sha256_of_the_files_it_passed(run):
    record = run.gate()
    assert record["deploy"] and record["basis"] == "no champion"
    assert set(record["files"]) == {"retrieval/model.pt", "retrieval/config.json", "ranking/model.pt",
                                    "ranking/config.json", "ranking/user_embeddings.npy", EVALUATION_FILE}  # fmt: skip
    assert record["files"]["ranking/model.pt"] == sha256_file(run.ranking / "model.pt")
    assert release.ReleaseDecision.read(run.gate_dir).files == record["files"]


def test_a_good_bundle_deploys_and_the_registry_holds_the_gated_bytes(run, registry):
    record = run.gate()
    summary = run.deploy()
    reg = Registry(registry)
    assert summary["version"] == 1 and reg.champion(release.MODEL_NAME).version == 1
    files = reg.version(release.MODEL_NAME, 1).files
    assert {rel: files[rel] for rel in record["files"]} == record["files"]
    assert "index/index.json" in files and not any("/work/" in rel for rel in files)


def test_a_model_overwritten_after_the_gate_is_refused_and_the_champion_stays(models, tmp_path, registry):
    reg = champion_v1(models, tmp_path, registry)
    challenger = Run(models, tmp_path / "challenger", registry)
    record = challenger.gate()
    assert record["deploy"] and record["champion_version"] == 1
    assert record["basis"].startswith("registered metrics (re-evaluation failed: ")  # it loaded; no dataset here
    (challenger.ranking / "model.pt").write_bytes(b"garbage written after the gate")
    with pytest.raises(RuntimeError, match=r"not what the gate passed.*ranking/model\.pt: changed since"):
        challenger.deploy()
    assert reg.champion(release.MODEL_NAME).version == 1
    assert [v.version for v in reg.versions(release.MODEL_NAME)] == [1]
    assert [h["version"] for h in reg.history(release.MODEL_NAME) if h["event"] == "promotion"] == [1]


def test_a_config_made_invalid_after_the_gate_is_refused(run, registry):
    run.gate()
    (run.retrieval / "config.json").write_text("{not json")
    with pytest.raises(RuntimeError, match=r"retrieval/config\.json: changed since"):
        run.deploy()
    assert Registry(registry).versions(release.MODEL_NAME) == []


def test_a_file_added_after_the_gate_is_refused(run, registry):
    run.gate()
    (run.ranking / "model.pt2").write_bytes(b"an exported program nobody gated")
    with pytest.raises(RuntimeError, match=r"ranking/model\.pt2: not among the hashed files"):
        run.deploy()
    assert Registry(registry).champion(release.MODEL_NAME) is None


@pytest.mark.parametrize(
    ("file", "content", "said"),
    [("retrieval/config.json", b"{not json", r"retrieval/config\.json is not valid JSON"),
     ("ranking/model.pt", b"not a state dict", r"ranking/ does not load: \w+")],
)  # fmt: skip
def test_a_bundle_that_does_not_load_is_refused_by_the_scratch_load(run, registry, file, content, said):
    """Broken before the gate (the hashes match): the load in a fresh process is what refuses it."""
    (run.root / file).write_bytes(content)
    assert run.gate()["deploy"]  # the figures are the hand-written ones: the gate itself loads nothing
    with pytest.raises(RuntimeError, match=f"the bundle does not load, so it is not deployed: .*{said}"):
        run.deploy()
    assert Registry(registry).versions(release.MODEL_NAME) == []


def test_a_decision_without_hashes_is_refused(run, registry):
    run.gate_dir.mkdir()
    release.ReleaseDecision(True, ["deployed: every gated metric passed"], "no champion", {}).write(run.gate_dir)
    with pytest.raises(RuntimeError, match="records no file hashes"):
        run.deploy()
    assert not registry.exists()


def test_a_first_model_below_popularity_is_refused_unless_the_floor_is_off(models, tmp_path, registry):
    weak = Run(models, tmp_path / "weak", registry, retrieval=WEAK)
    record = weak.gate()
    assert not record["deploy"] and record["reasons"][-1] == "not deployed: recall@100, recall@10 did not pass"
    assert "recall@100 0.08 vs popularity baseline 0.334: does not beat it" in " ".join(record["reasons"])
    assert record["reasons"][0].startswith("no champion yet: the first model must beat the evaluation's baselines")
    assert record["policy"]["first_model"] == {"beat_baselines": True, "margin": 0.0}
    check = next(c for c in record["per_metric"] if c["metric"] == "recall@100")
    assert not check["ok"] and check["baseline"] == 0.334
    with pytest.raises(RuntimeError, match="the gate did not pass this model"):
        weak.deploy()
    # the floor turned off in the policy: the same model deploys as the first champion
    allowed = weak.gate(FLOOR_OFF)
    assert allowed["deploy"] and allowed["reasons"][0] == "no champion yet: deploying the first model"
    assert weak.deploy()["version"] == 1 and Registry(registry).champion(release.MODEL_NAME).version == 1


def test_a_champion_that_does_not_load_is_no_bar_and_nothing_deploys(models, tmp_path, registry):
    """The audit's case: a champion registered with a broken config.json. Its registered figures describe files
    nobody can load, so they are not compared against as if they were the champion's."""
    broken = Run(models, tmp_path / "broken", registry)
    (broken.retrieval / "config.json").write_text("{broken")
    reg = Registry(registry)
    v1 = reg.register(release.MODEL_NAME, broken.root, {"recall@100": 0.30}, run_id="old")
    reg.promote(release.MODEL_NAME, v1, "test")
    challenger = Run(models, tmp_path / "challenger", registry)
    record = challenger.gate()
    assert not record["deploy"] and record["champion_version"] == 1
    assert record["basis"].startswith("registered metrics (champion v1 does not load: ")
    assert record["reasons"][-1].startswith("not deployed: champion v1 does not load (")
    assert "retrieval/config.json is not valid JSON" in record["reasons"][-1]
    assert record["per_metric"][0]["champion"] == 0.30  # the comparison is still shown
    with pytest.raises(RuntimeError, match="the gate did not pass this model: not deployed: champion v1"):
        challenger.deploy()
    assert reg.champion(release.MODEL_NAME).version == 1 and reg.history(release.MODEL_NAME)[-1]["deploy"] is False


def test_an_unreadable_champion_record_fails_the_gate_clearly(models, tmp_path, registry):
    champion_v1(models, tmp_path, registry)
    (registry / release.MODEL_NAME / "champion.json").write_text("{garbage")
    with pytest.raises(RuntimeError, match=r"champion record of 'homefeed' .* cannot be read \(JSONDecodeError"):
        Run(models, tmp_path / "challenger", registry).gate()


def test_the_embedding_refresh_ships_the_champion_byte_for_byte(models, tmp_path, registry):
    reg = champion_v1(models, tmp_path, registry)
    refresh = Run(models, tmp_path / "refresh", registry)
    for part in ("retrieval", "ranking", "evaluation"):
        shutil.rmtree(refresh.root / part)
    release.champion_step(str(registry), refresh.retrieval, refresh.ranking, refresh.evaluation, refresh.gate_dir)
    assert refresh.deploy()["version"] == 2
    v1, v2 = (reg.version(release.MODEL_NAME, v).files for v in (1, 2))
    assert {k: v for k, v in v2.items() if not k.startswith("index/")} == {
        k: v for k, v in v1.items() if not k.startswith("index/")
    }
    assert reg.champion(release.MODEL_NAME).version == 2
