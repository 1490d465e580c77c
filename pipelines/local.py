"""Run a pipeline (pipelines/compile.py PIPELINES) on this machine with kfp.local, in a versioned run directory.

```
<runs_dir>/<run_id>/
  pipeline.yaml   the IR YAML of this run's pipeline (what a cluster would run)
  pipeline.log    every task's log, as kfp.local streams it
  artifacts/      kfp.local's pipeline root: <pipeline>-<time>/<task>/<output>
  run.json        parameters, status, per-step wall times and every output artifact's path and metadata (the
                  pipeline's outputs, and those of steps that ran under a condition, e.g. pin_index, deployment)
<runs_dir>/latest -> <run_id>
```
kfp.local prints each task's full executor input and log to stdout; that goes to pipeline.log, and the caller gets a
callback per step instead, so a terminal shows one line per step.

`in_process=True` runs the same pipeline with the same orchestration (kfp.local: its DAG, conditions, artifact
layout and executor), but each task's function in this process instead of a fresh Python per task: what tests and
benchmarks use when a process per step is cost, not the subject (bench/demo_loop.py measures that cost).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from kfp import local
from kfp.dsl import executor
from kfp.local import status, task_dispatcher

from components.features.online_store import PASSWORD_ENV, SQLITE
from components.index.client import TOKEN_ENV
from components.release import DeployTarget
from pipelines.compile import compile_pipeline, parameter_names, pipeline

RUN_FILE = "run.json"
_EXECUTOR_OUTPUT = "executor_output.json"  # what kfp.local writes per task: its output artifacts' uri and metadata
LATEST = "latest"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")


@dataclass
class StepTime:
    name: str
    status: str
    seconds: float


@dataclass
class LocalRun:
    """What a finished (or failed) local run left behind; `load_run` reads it back from run.json."""

    run_id: str
    run_dir: Path
    pipeline: str
    params: dict
    status: str = "running"
    started: str = ""
    seconds: float = 0.0
    steps: list[StepTime] = field(default_factory=list)
    artifacts: dict[str, dict] = field(default_factory=dict)  # output name -> {"path", "metadata"}
    error: str | None = None

    def path(self, output: str) -> Path:
        if output not in self.artifacts:
            raise KeyError(f"run {self.run_id} has no output {output!r}; it has {sorted(self.artifacts)}")
        return Path(self.artifacts[output]["path"])

    def save(self) -> None:
        (self.run_dir / RUN_FILE).write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")


def load_run(run_dir: Path) -> LocalRun:
    """A run from its directory (or the runs directory's `latest` link when given the runs directory itself)."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).exists() and (run_dir / LATEST / RUN_FILE).exists():
        run_dir = run_dir / LATEST
    if not (run_dir / RUN_FILE).exists():
        raise FileNotFoundError(f"{run_dir} holds no pipeline run ({RUN_FILE} is missing): run the pipeline first")
    data = json.loads((run_dir / RUN_FILE).read_text())
    data["steps"] = [StepTime(**s) for s in data["steps"]]
    data["run_dir"] = Path(data["run_dir"])
    return LocalRun(**data)


class _StepWatcher:
    """A stdout stand-in: writes kfp.local's output to the log and calls back when a task starts or finishes."""

    def __init__(self, log, on_step: Callable[[StepTime], None] | None, on_start: Callable[[str], None] | None):
        self.log, self.on_step, self.on_start = log, on_step, on_start
        self.steps: list[StepTime] = []
        self._since = time.perf_counter()

    def write(self, text: str) -> int:
        plain = _ANSI.sub("", text)  # kfp.local colours task names; a log file wants plain text
        self.log.write(plain)
        for name in _STARTED.findall(plain):
            self._since = time.perf_counter()
            if self.on_start:
                self.on_start(name)
        for name, outcome in _FINISHED.findall(plain):
            step = StepTime(name, outcome, round(time.perf_counter() - self._since, 2))
            self.steps.append(step)
            if self.on_step:
                self.on_step(step)
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    # what libraries ask of sys.stdout before writing to it (ray.tune reads `encoding` on import)
    encoding = "utf-8"

    def isatty(self) -> bool:
        return False


def _conditional_outputs(root: Path, known: dict) -> dict[str, dict]:
    """Outputs of steps that are not pipeline outputs (those under a dsl.If), read from each task's
    `executor_output.json` in kfp.local's layout `<root>/<pipeline>-<time>/<task>/`: path and metadata. A name two
    steps share is left out rather than guessed."""
    found: dict[str, list[dict]] = {}
    for record in sorted(root.glob(f"*/*/{_EXECUTOR_OUTPUT}")):
        for name, entry in json.loads(record.read_text()).get("artifacts", {}).items():
            for artifact in entry.get("artifacts", []):
                if name not in known:
                    path = str(Path(artifact["uri"]).resolve())
                    found.setdefault(name, []).append({"path": path, "metadata": artifact.get("metadata", {})})
    return {name: entries[0] for name, entries in found.items() if len(entries) == 1}


def _new_run_dir(runs_dir: Path) -> tuple[str, Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_id = stamp if n == 0 else f"{stamp}-{n}"
        run_dir = runs_dir / run_id
        with contextlib.suppress(FileExistsError):
            run_dir.mkdir(parents=True)
            return run_id, run_dir
    raise RuntimeError(f"could not create a fresh run directory under {runs_dir}")


def _point_latest(runs_dir: Path, run_id: str) -> None:
    link = runs_dir / LATEST
    tmp = runs_dir / f".{LATEST}.{run_id}"
    tmp.symlink_to(run_id)
    tmp.replace(link)  # atomic: a reader sees the old run or the new one, never no link


class _InProcessTask:
    """A kfp.local task handler (kfp.local.task_handler_interface.ITaskHandler) that runs the task's lightweight
    component in this process, through the executor kfp's own `executor_main` uses, with the same executor input.
    The component is looked up by name in pipelines/kfp_components.py, the module the pipeline was built from."""

    def __init__(self, image: str, full_command: list[str], pipeline_root: str, runner, env_vars=None) -> None:
        self.command, self.env = full_command, dict(env_vars or {})

    def run(self) -> status.Status:
        from pipelines import kfp_components

        name = self.command[self.command.index("--function_to_execute") + 1]
        executor_input = json.loads(self.command[self.command.index("--executor_input") + 1])
        component = getattr(kfp_components, name)
        try:
            executor.Executor(executor_input=executor_input, function_to_execute=component.python_func).execute()
        except Exception:  # the task fails, as its process would; the traceback goes to the log
            traceback.print_exc(file=sys.stdout)
            return status.Status.FAILURE
        return status.Status.SUCCESS


@contextlib.contextmanager
def _tasks_in_process(log):
    # kfp.local picks the handler for its SubprocessRunner from this module attribute at each task; it has no way
    # to register another runner, so the attribute is swapped for the run and put back after.
    real = task_dispatcher.subprocess_task_handler
    task_dispatcher.subprocess_task_handler = SimpleNamespace(SubprocessTaskHandler=_InProcessTask)
    # What native code writes to file descriptor 2 (torch's and Ray's C++ warnings) goes to the log too, as a task's
    # process would send it there; the terminal keeps only the step lines.
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        task_dispatcher.subprocess_task_handler = real


def local_defaults(params: dict, workspace: Path) -> dict:
    """`params` with the release settings a local run leaves empty filled in: the registry under `workspace`, and
    the local model servers (components/cluster/local_deployment.py) as the deploy target.

    With a `podman:<dir>` target (the local container cluster, components/cluster/local_cluster.py), the features go
    to the cluster's Redis and the index to its Milvus unless set otherwise, and MILVUS_TOKEN and REDIS_PASSWORD are set
    for the steps when unset: the release is then one the cluster's pods can serve. With `ray_backend=jobs` the training steps
    stage under `workspace/ray-staging` unless HOMEFEED_WORK_MOUNT says otherwise."""
    workspace = Path(workspace).resolve()
    out = dict(params)
    if "registry" in out and not out["registry"]:
        out["registry"] = str(workspace / "registry")
    if "deploy_target" in out and not out["deploy_target"]:
        out["deploy_target"] = f"local:{workspace / 'serving'}"
    target = DeployTarget.parse(out["deploy_target"]) if out.get("deploy_target") else None
    if target is not None and target.kind == "podman":
        from components.cluster.local_cluster import client_settings

        where = Path(target.where).resolve()  # the deploy step may run in another directory
        out["deploy_target"] = f"podman:{where}"
        cluster = client_settings(where)
        if out.get("online_store", SQLITE) == SQLITE:
            out["online_store"] = cluster["online_store"]
        if "index_uri" in out and not out["index_uri"]:
            out["index_uri"] = cluster["index_uri"]
        os.environ.setdefault(TOKEN_ENV, cluster["milvus_token"])
        if out["online_store"] == cluster["online_store"]:  # the steps that write features reach its Redis
            os.environ.setdefault(PASSWORD_ENV, cluster["redis_password"])
    if out.get("ray_backend") == "jobs":  # a Ray cluster on this machine sees the workspace at the same path
        from pipelines.ray_backend import MOUNT_ENV

        os.environ.setdefault(MOUNT_ENV, str(workspace / "ray-staging"))
    return out


def run_local(
    params: dict,
    runs_dir: Path,
    on_step: Callable[[StepTime], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    name: str = "homefeed_training",
    in_process: bool = False,
) -> LocalRun:
    """Run pipeline `name` with `params` through kfp.local's SubprocessRunner; parameters the pipeline does not
    declare are left out (the settings hold every pipeline's).

    Raises RuntimeError naming the failed step and the log when a step fails; run.json records the failure too.
    `in_process`: run each task's function in this process (the module docstring says when).
    """
    fn = pipeline(name)
    params = {k: v for k, v in params.items() if k in parameter_names(name)}
    runs_dir = Path(runs_dir).resolve()
    run_id, run_dir = _new_run_dir(runs_dir)
    run = LocalRun(run_id, run_dir, name, dict(params), started=datetime.now(UTC).isoformat())
    compile_pipeline(run_dir / "pipeline.yaml", name)
    # use_venv=False: the tasks run in this environment, which has the project installed (a venv per task would
    # have to pip-install torch and the rest for every step).
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / "artifacts"))
    t0 = time.perf_counter()
    with open(run_dir / "pipeline.log", "w") as log:
        watcher = _StepWatcher(log, on_step, on_start)
        try:
            in_process_tasks = _tasks_in_process(log) if in_process else contextlib.nullcontext()
            with (
                contextlib.redirect_stdout(watcher),
                contextlib.redirect_stderr(log),
                warnings.catch_warnings(),
                in_process_tasks,
            ):
                # Resource requests and display names are for the cluster, and the image is the project's own, whose
                # code is this environment's; kfp.local warns about both on every task.
                warnings.filterwarnings("ignore", message=r"Task '.*': settings \[", category=UserWarning)
                warnings.filterwarnings("ignore", message="You may be attemping to run", category=RuntimeWarning)
                task = fn(**params)
            run.status = "succeeded"
            run.artifacts = {
                output: {"path": str(Path(a.path).resolve()), "metadata": dict(a.metadata)}
                for output, a in task.outputs.items()
            }
            run.artifacts |= _conditional_outputs(run_dir / "artifacts", run.artifacts)
        except Exception as exc:
            failed = next((s.name for s in watcher.steps if s.status != "SUCCESS"), "unknown")
            run.status, run.error = "failed", f"step {failed!r} failed: {exc}"
            raise RuntimeError(f"pipeline run {run_id}: {run.error}; see {run_dir / 'pipeline.log'}") from exc
        finally:
            run.steps, run.seconds = watcher.steps, round(time.perf_counter() - t0, 2)
            run.save()
    _point_latest(runs_dir, run_id)
    return run
