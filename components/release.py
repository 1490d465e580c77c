"""The release steps after evaluation: the champion/challenger gate, and the deploy of a model bundle.

A release is one *bundle* in the registry (components/registry.py) under the model name `homefeed`:

    retrieval/  ranking/  index/  evaluation.json

registered by the deploy step, so every version in the registry was deployed at some point, and the champion
pointer always names the version that serves. Every gate decision, passed or not, goes to the registry's history.

The gate compares like with like: the champion's models are fetched and evaluated on the challenger's holdout, since
a retraining run evaluates on a fresher window than the one the champion was measured on. If the champion cannot be
evaluated there (its bundle is unreadable, or its ID tables do not cover this dataset), its registered figures are
used and the decision's `basis` says so.

Deploy targets (`DeployTarget.parse`):
    local:<dir>        restart the local model servers on the new bundle (components/cluster/local_deployment.py)
    podman:<dir>       play the release's pods anew in the local container cluster (components/cluster/local_cluster.py)
    kserve:<namespace> patch the InferenceServices' storageUri to the version in an s3:// registry, wait until Ready
    none               register and promote only
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from components.artifacts import read_json, write_json
from components.data.split import TimeSplit
from components.evaluate.offline import evaluate_models
from components.evaluate.result import EVALUATION_FILE, Evaluation
from components.gate import GatePolicy, decide
from components.registry import Registry

MODEL_NAME = "homefeed"
BUNDLE_PARTS = ("retrieval", "ranking", "index")
DECISION_FILE = "decision.json"
# The InferenceServices a cluster deploy moves to the new version (manifests/), named like the models they serve.
# Both get the bundle's URI: the storage initializer puts it under /mnt/models, and each predictor reads its own
# folder there (retrieval/ or ranking/) and the shared index/.
INFERENCE_SERVICES = ("retrieval", "ranking")


@dataclass(frozen=True)
class ReleaseDecision:
    """decision.json: whether a bundle may ship, and why. Written by the gate (or, for an embedding refresh, by the
    champion step), read by the deploy step, and kept in the registry's history."""

    deploy: bool
    reasons: list[str]  # the last one is the verdict
    basis: str  # what the champion's figures are: re-evaluated on this holdout, registered, or none
    challenger: dict  # the metrics registered with the version (Evaluation.flat)
    champion: dict | None = None
    champion_version: int | None = None
    per_metric: list[dict] = field(default_factory=list)  # gate.Decision.to_dict()'s checks
    policy: dict | None = None
    metrics: dict = field(default_factory=dict)  # gate.Decision.as_metrics(): what KFP Metrics show
    run_id: str = ""

    @property
    def verdict(self) -> str:
        return self.reasons[-1]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ReleaseDecision:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def write(self, out_dir: Path) -> Path:
        return write_json(out_dir, DECISION_FILE, self.to_json())

    @classmethod
    def read(cls, gate_dir: Path) -> ReleaseDecision:
        return cls.from_json(read_json(gate_dir, DECISION_FILE, "release decision"))


@dataclass(frozen=True)
class DeployTarget:
    kind: str  # local | podman | kserve | none
    where: str = ""  # the deployment or cluster directory (local, podman) or namespace (kserve)

    @classmethod
    def parse(cls, raw: str) -> DeployTarget:
        kind, _, where = raw.partition(":")
        if kind == "none" and not where:
            return cls("none")
        if kind in ("local", "podman", "kserve") and where:
            return cls(kind, where)
        raise ValueError(f"deploy target must be local:<dir>, podman:<dir>, kserve:<namespace> or none; got {raw!r}")


def gate_step(
    dataset_dir: Path,
    evaluation_dir: Path,
    out_dir: Path,
    split,
    registry_uri: str,
    run_id: str,
    policy: str = "",
    model_name: str = MODEL_NAME,
) -> dict:
    """Decide whether the evaluated challenger may replace the champion; writes and returns the decision.

    `policy`: a JSON object of gate rules (components/gate.py GatePolicy.from_dict); empty for the default policy.
    Returns the ReleaseDecision's JSON form; it is recorded in the registry's history when the model has versions
    there.
    """
    rules = GatePolicy.from_dict(json.loads(policy)) if policy.strip() else GatePolicy.default()
    registry = Registry(_required(registry_uri))
    challenger = Evaluation.read(evaluation_dir).flat()
    champ = registry.champion(model_name)
    basis, champion_metrics = "no champion", None
    if champ is not None:
        basis, champion_metrics = "registered metrics", champ.metrics
        with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
            try:
                models = registry.fetch(model_name, champ.version, Path(tmp) / "bundle", only=("retrieval", "ranking"))
                result = evaluate_models(dataset_dir, models / "retrieval", models / "ranking", TimeSplit.of(split))
                basis, champion_metrics = "re-evaluated on this holdout", result.flat()
            except Exception as exc:  # any failure: fall back to the recorded figures, and say why
                basis = f"registered metrics (re-evaluation failed: {type(exc).__name__}: {exc})"
    decision = decide(challenger, champion_metrics, rules)
    record = ReleaseDecision(
        **decision.to_dict(),
        champion_version=None if champ is None else champ.version,
        basis=basis,
        policy=rules.to_dict(),
        metrics=decision.as_metrics(),
        run_id=run_id,
    )
    if champ is not None:
        registry.record(model_name, record.to_json())
    record.write(out_dir)
    return record.to_json()


def deploy_step(
    retrieval_dir: Path,
    ranking_dir: Path,
    index_dir: Path,
    evaluation_dir: Path,
    features_dir: Path,
    gate_dir: Path,
    out_dir: Path,
    registry_uri: str,
    target: str,
    run_id: str,
    model_name: str = MODEL_NAME,
    timeout_s: float = 600.0,
) -> dict:
    """Register the bundle as a new version, roll it out to `target`, then promote it to champion.

    Promotion comes last: if the rollout fails, the champion pointer still names the version that serves.
    Refuses a bundle whose gate decision was not to deploy (the pipeline's condition should already have).
    """
    target_ = DeployTarget.parse(target)
    decision = ReleaseDecision.read(gate_dir)
    if not decision.deploy:
        raise RuntimeError(f"the gate did not pass this model: {decision.verdict}")
    registry = Registry(_required(registry_uri))
    if target_.kind == "kserve" and not registry.uri.startswith("s3://"):
        raise ValueError(
            f"a kserve deploy needs an s3:// registry the storage initializer can read, not {registry.uri}"
        )
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        bundle = Path(tmp)
        for part, src in zip(BUNDLE_PARTS, (retrieval_dir, ranking_dir, index_dir), strict=True):
            # LOCK: Milvus Lite's lock file belongs to whoever has the file open, not to the data; work/ and
            # ray_runs/ are training scratch (the model's own files are at the top of its folder)
            shutil.copytree(src, bundle / part, ignore=shutil.ignore_patterns("LOCK", "work", "ray_runs"))
        shutil.copyfile(Path(evaluation_dir) / EVALUATION_FILE, bundle / EVALUATION_FILE)
        version = registry.register(model_name, bundle, decision.challenger, run_id)
    info = registry.version(model_name, version)
    rollout = _roll_out(target_, registry, model_name, version, Path(features_dir), timeout_s)
    registry.promote(model_name, version, f"{decision.verdict} ({decision.basis}); run {run_id}")
    summary = {"version": version, "target": target, "storage_uri": info.uri, "rollout": rollout}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "deployment.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _roll_out(
    target: DeployTarget, registry: Registry, name: str, version: int, features_dir: Path, timeout_s: float
) -> dict:
    if target.kind == "none":
        return {}
    if target.kind == "local":
        from components.cluster import local_deployment as deployment

        dest = deployment.release_dir(target.where, version)
        if not dest.exists():
            registry.fetch(name, version, dest, only=BUNDLE_PARTS)
        return deployment.deploy(target.where, version, features_dir, timeout_s=timeout_s)
    if target.kind == "podman":
        from components.cluster import local_cluster

        dest = local_cluster.release_dir(target.where, version)
        if not dest.exists():
            registry.fetch(name, version, dest, only=BUNDLE_PARTS)
        return local_cluster.deploy(target.where, version, features_dir, timeout_s=timeout_s)
    from components.cluster.inference_service import rollout
    from components.cluster.kube import api_client

    uri = registry.version(name, version).uri
    return rollout(api_client(), target.where, dict.fromkeys(INFERENCE_SERVICES, uri), timeout_s=timeout_s)


def _required(registry_uri: str) -> str:
    if not registry_uri.strip():
        raise ValueError(
            "no model registry given: set the pipeline parameter `registry` (a path or s3://bucket/prefix)"
        )
    return registry_uri


def champion_step(
    registry_uri: str, retrieval_out: Path, ranking_out: Path, evaluation_out: Path, gate_out: Path
) -> dict:
    """The champion's retrieval and ranking models and evaluation, fetched for `embedding_refresh`, with the
    decision that lets the deploy step ship them again on a new corpus and index (nothing to gate: the models are
    the ones serving). Fails clearly when there is no champion yet."""
    registry = Registry(_required(registry_uri))
    champ = registry.champion(MODEL_NAME)
    if champ is None:
        raise RuntimeError(f"no champion in {registry.uri}: run homefeed_training or homefeed_retraining first")
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        bundle = registry.fetch(
            MODEL_NAME, champ.version, Path(tmp) / "bundle", only=("retrieval", "ranking", EVALUATION_FILE)
        )
        for src, dest in ((bundle / "retrieval", retrieval_out), (bundle / "ranking", ranking_out)):
            shutil.copytree(src, dest, dirs_exist_ok=True)
        Path(evaluation_out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle / EVALUATION_FILE, Path(evaluation_out) / EVALUATION_FILE)
    reason = f"embedding refresh of champion v{champ.version}: same models, a fresh corpus and index"
    ReleaseDecision(True, [reason], reason, champ.metrics, champion_version=champ.version).write(gate_out)
    return {"version": champ.version}
