"""The release steps after evaluation: the champion/challenger gate, and the deploy of a model bundle.

A release is one *bundle* in the registry (components/registry.py) under the model name `homefeed`:

    retrieval/  ranking/  index/  evaluation.json

registered by the deploy step, so every version in the registry was deployed at some point, and the champion
pointer always names the version that serves. Every gate decision, passed or not, goes to the registry's history.

The gate compares like with like: the champion's models are fetched and evaluated on the challenger's holdout, since
a retraining run evaluates on a fresher window than the one the champion was measured on. If the champion loads but
cannot be evaluated there (its ID tables do not cover this dataset, say), its registered figures are used and the
decision's `basis` says so. If its bundle does not load at all, nothing is deployed (`_champion_figures` says why).

Nothing unverified is promoted. The gate records the sha256 of every file of the models it passed and of the
evaluation it read (`ReleaseDecision.files`); the deploy step checks the bundle it is about to register against
them, then loads the bundle's models in a fresh process with the loaders evaluation and serving use
(`load_bundle`), and only then registers, rolls out and promotes. A file written into a model folder after the gate,
or a bundle that does not load, is refused with the file named, before anything is registered or served.

Deploy targets (`DeployTarget.parse`):
    local:<dir>        restart the local model servers on the new bundle (components/cluster/local_deployment.py)
    podman:<dir>       play the release's pods anew in the local container cluster (components/cluster/local_cluster.py)
    kserve:<namespace> patch the InferenceServices' storageUri to the version in an s3:// registry, wait until Ready
    none               register and promote only
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from components.artifacts import digest_mismatches, read_json, sha256_file, tree_digests, write_json
from components.data.split import TimeSplit
from components.evaluate.offline import evaluate_models
from components.evaluate.result import EVALUATION_FILE, Evaluation
from components.gate import GatePolicy, decide
from components.registry import Registry, VersionInfo
from components.train.ranking import load_pinnability
from components.train.retrieval import load_two_tower

MODEL_NAME = "homefeed"
BUNDLE_PARTS = ("retrieval", "ranking", "index")
DECISION_FILE = "decision.json"
# The InferenceServices a cluster deploy moves to the new version (manifests/), named like the models they serve.
# Both get the bundle's URI: the storage initializer puts it under /mnt/models, and each predictor reads its own
# folder there (retrieval/ or ranking/) and the shared index/.
INFERENCE_SERVICES = ("retrieval", "ranking")
# The models the gate vouches for. index/ is built after the gate passed, from the retrieval model it hashed.
GATED_PARTS = ("retrieval", "ranking")
# LOCK: Milvus Lite's lock file belongs to whoever has the file open, not to the data; work/ and ray_runs/ are
# training scratch (the model's own files are at the top of its folder). Neither copied into a bundle nor hashed.
BUNDLE_IGNORE = ("LOCK", "work", "ray_runs")
# Loading both models in a fresh interpreter: torch's import is most of it (seconds); a hang is not a load.
LOAD_TIMEOUT_S = 300.0


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
    files: dict = field(default_factory=dict)  # bundle path -> sha256 of what the gate passed (`gated_files`)

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
    *,
    retrieval_dir: Path,
    ranking_dir: Path,
) -> dict:
    """Decide whether the evaluated challenger may replace the champion; writes and returns the decision.

    `policy`: a JSON object of gate rules (components/gate.py GatePolicy.from_dict); empty for the default policy.
    `retrieval_dir`, `ranking_dir`: the challenger's models, which the evaluation measured; their files' sha256 (and
    the evaluation's) go into the decision, and the deploy step ships nothing else.
    Returns the ReleaseDecision's JSON form; it is recorded in the registry's history when the model has versions
    there.
    """
    rules = GatePolicy.from_dict(json.loads(policy)) if policy.strip() else GatePolicy.default()
    # hashed first: the decision vouches for the files as they were when it was made
    files = gated_files(retrieval_dir, ranking_dir, evaluation_dir)
    registry = Registry(_required(registry_uri))
    challenger = Evaluation.read(evaluation_dir).flat()
    champ = _champion(registry, model_name)
    basis, champion_metrics, refusal = "no champion", None, None
    if champ is not None:
        basis, champion_metrics, refusal = _champion_figures(registry, champ, dataset_dir, split, rules)
    decision = decide(challenger, champion_metrics, rules)
    if refusal:
        decision = decision.refused(refusal)
    record = ReleaseDecision(
        **decision.to_dict(),
        champion_version=None if champ is None else champ.version,
        basis=basis,
        policy=rules.to_dict(),
        metrics=decision.as_metrics(),
        run_id=run_id,
        files=files,
    )
    if champ is not None:
        registry.record(model_name, record.to_json())
    record.write(out_dir)
    return record.to_json()


def _champion(registry: Registry, name: str) -> VersionInfo | None:
    try:
        return registry.champion(name)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        # No decision is possible without knowing what serves: the step fails, so the run shows it, rather than
        # deploying as if there were no champion (which would skip the comparison altogether).
        raise RuntimeError(
            f"the champion record of {name!r} in {registry.uri} cannot be read ({type(exc).__name__}: {exc}): "
            "repair champion.json (or the version.json it names) before gating"
        ) from exc


def _champion_figures(
    registry: Registry, champ: VersionInfo, dataset_dir: Path, split, rules: GatePolicy
) -> tuple[str, dict, str | None]:
    """The champion's figures to compare with, where they come from, and a reason to refuse (None: no reason).

    A champion that loads but cannot be evaluated on this holdout (its ID tables do not cover a fresher dataset)
    is compared by its registered figures: they were measured on its own holdout, a weaker comparison, and `basis`
    says so. A champion whose bundle does not load is a different matter: its registered figures describe files
    that are no longer what the registry holds (or never loaded), so they cannot be trusted as the bar, and what
    serves may be broken. Refusing is the safe side: a person restores a champion that loads (promotes a version
    that does) and runs again, rather than the gate promoting on figures nobody can reproduce.
    """
    registered = champ.metrics
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        try:
            models = registry.fetch(champ.name, champ.version, Path(tmp) / "bundle", only=GATED_PARTS)
            load_bundle(models)
        except Exception as exc:  # noqa: BLE001 -- any failure to fetch or load: the bundle is unusable
            why = f"{type(exc).__name__}: {exc}"
            return (
                f"registered metrics (champion v{champ.version} does not load: {why})",
                registered,
                f"champion v{champ.version} does not load ({why}), so its registered figures are not a trustworthy "
                "bar; promote a champion that loads, then run the gate again",
            )
        try:
            result = evaluate_models(dataset_dir, models / "retrieval", models / "ranking", TimeSplit.of(split))
            return "re-evaluated on this holdout", result.flat(), None
        except Exception as exc:  # noqa: BLE001 -- any failure: fall back to the recorded figures, and say why
            basis = f"registered metrics (re-evaluation failed: {type(exc).__name__}: {exc})"
    if not any(_finite(registered.get(metric)) for metric in rules.rules):
        # every check would read "champion has none, not compared" and pass: a gate that compared nothing
        return basis, registered, f"champion v{champ.version} has no registered figure for any gated metric"
    return basis, registered, None


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
    load_timeout_s: float = LOAD_TIMEOUT_S,
) -> dict:
    """Verify the bundle, register it as a new version, roll it out to `target`, then promote it to champion.

    Verified first, before anything is registered: the gate's decision must be to deploy; the bundle's model and
    evaluation files must be, byte for byte, those the gate hashed; and its models must load in a fresh process.
    Promotion comes last: if the rollout fails, the champion pointer still names the version that serves.
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
    if not decision.files:
        raise RuntimeError(
            f"the decision in {gate_dir} records no file hashes, so nothing ties this bundle to what the gate passed: "
            "run the gate again"
        )
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        bundle = Path(tmp)
        for part, src in zip(BUNDLE_PARTS, (retrieval_dir, ranking_dir, index_dir), strict=True):
            shutil.copytree(src, bundle / part, ignore=shutil.ignore_patterns(*BUNDLE_IGNORE))
        shutil.copyfile(Path(evaluation_dir) / EVALUATION_FILE, bundle / EVALUATION_FILE)
        # the copy is checked, not the sources: it is what gets registered, whatever happens to them meanwhile
        verify_bundle(bundle, decision.files)
        scratch_load(bundle, load_timeout_s)
        version = registry.register(model_name, bundle, decision.challenger, run_id)
    # before the rollout: what serves must be the version holding the gated bytes
    registry.check_files(model_name, version, decision.files)
    info = registry.version(model_name, version)
    rollout = _roll_out(target_, registry, model_name, version, Path(features_dir), timeout_s)
    reason = f"{decision.verdict} ({decision.basis}); run {run_id}"
    registry.promote(model_name, version, reason, expect_files=decision.files)
    summary = {"version": version, "target": target, "storage_uri": info.uri, "rollout": rollout}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "deployment.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def gated_files(retrieval_dir: Path, ranking_dir: Path, evaluation_dir: Path) -> dict[str, str]:
    """sha256 of the files a gate decision vouches for, keyed by their path in a bundle: `retrieval/...`,
    `ranking/...` (scratch left out, as the bundle's copy leaves it out) and `evaluation.json`."""
    files: dict[str, str] = {}
    for part, src in zip(GATED_PARTS, (retrieval_dir, ranking_dir), strict=True):
        found = tree_digests(src, part, BUNDLE_IGNORE)
        if not found:
            raise FileNotFoundError(f"{src}: the {part} model folder holds no files")
        files |= found
    evaluation = Path(evaluation_dir) / EVALUATION_FILE
    if not evaluation.is_file():
        raise FileNotFoundError(f"{evaluation_dir} holds no evaluation: {EVALUATION_FILE} is missing")
    return files | {EVALUATION_FILE: sha256_file(evaluation)}


def verify_bundle(bundle: Path, expected: dict[str, str]) -> None:
    """A RuntimeError naming each file of `bundle` that is not what the gate hashed (changed, missing or added)."""
    problems = digest_mismatches(expected, gated_files(bundle / "retrieval", bundle / "ranking", bundle))
    if problems:
        raise RuntimeError(
            "the bundle is not what the gate passed, so nothing is registered or deployed: " + "; ".join(problems)
        )


def load_bundle(bundle: Path) -> None:
    """Load a bundle's models as evaluation and serving load them (`load_two_tower`, `load_pinnability`): every
    JSON file parsed first, so that a broken one is named (json's error names only a line and column)."""
    bundle = Path(bundle)
    for path in sorted(bundle.rglob("*.json")):
        try:
            json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path.relative_to(bundle).as_posix()} is not valid JSON ({exc})") from None
    for part, load in (("retrieval", load_two_tower), ("ranking", load_pinnability)):
        try:
            load(bundle / part)
        except Exception as exc:
            raise RuntimeError(f"{part}/ does not load: {type(exc).__name__}: {exc}") from exc


def scratch_load(bundle: Path, timeout_s: float = LOAD_TIMEOUT_S) -> None:
    """`load_bundle` in a fresh interpreter: a RuntimeError saying why when the models do not load.

    A separate process because loading runs the bundle's pickled tensors through torch: a bad file could crash
    or wedge the interpreter, and the deploy step should live to report it (and keep nothing loaded)."""
    root = str(Path(__file__).resolve().parents[1])  # this checkout's packages, wherever the step runs from
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    code = "import sys; from components.release import load_check_main; sys.exit(load_check_main(sys.argv[1:]))"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=timeout_s, env=env
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the bundle did not load within {timeout_s:.0f} s, so it is not deployed") from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RuntimeError(f"the bundle does not load, so it is not deployed: {said}")


def load_check_main(argv: list[str]) -> int:
    """`scratch_load`'s child: load the bundle at argv[0]; 0 when it loads, else 1 with one line on stderr."""
    try:
        load_bundle(Path(argv[0]))
    except Exception as exc:  # noqa: BLE001 -- every failure is the answer, as one line for the parent
        print(" ".join(f"{type(exc).__name__}: {exc}".split()), file=sys.stderr)
        return 1
    return 0


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
    champ = _champion(registry, MODEL_NAME)
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
    # hashed as written out: the deploy step then ships exactly the champion's files (fetch checked them against
    # the registry's digests), whatever else writes into these folders before it runs
    files = gated_files(retrieval_out, ranking_out, evaluation_out)
    reason = f"embedding refresh of champion v{champ.version}: same models, a fresh corpus and index"
    ReleaseDecision(True, [reason], reason, champ.metrics, champion_version=champ.version, files=files).write(gate_out)
    return {"version": champ.version}


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)
