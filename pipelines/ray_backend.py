"""Where a training step's Ray work runs: on a local Ray instance, on a KubeRay cluster as a RayJob, or on a running
Ray cluster through its Jobs API.

One setting switches (the pipeline parameter `ray_backend`); the step function is the same every way:

- `local`: the step runs in the calling process, whose `ray.init()` starts a Ray instance on this machine (or in the
  KFP pod, on a cluster without KubeRay).
- `kuberay`: the step's inputs are staged on the shared workspace volume (a ReadWriteMany PVC the KFP task and the
  Ray pods both mount at WORKSPACE_MOUNT), a `RayJob` runs `python -m pipelines.ray_backend <call.json>` on a fresh Ray
  cluster of `ray_workers` workers (with `gpus` each), and the step's outputs come back from the volume into the KFP
  output artifact. The job is polled until it ends; anything but SUCCEEDED fails the step
  (components/cluster/rayjob.py). KubeRay deletes the cluster when the job finishes (shutdownAfterJobFinishes) and
  the RayJob after its TTL.
- `jobs`: the same staging and the same entrypoint, submitted to a Ray cluster that is already running through its
  Jobs API (`ray_address`, the head's dashboard address, http://HOST:8265): what KubeRay's RayJob submitter does
  with the cluster it made. The job's logs are followed while it runs; anything but SUCCEEDED fails the step with
  their tail. The staging folder must be one the cluster's nodes see at the same path: the shared workspace volume
  on a cluster, any folder when the cluster runs on this machine ($HOMEFEED_WORK_MOUNT names it).

    call.json   {"step": "train_retrieval", "kwargs": {...paths on the volume...}}
    result.json what the step returned (written by the job)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The project image (Dockerfile) that every pipeline task and RayJob runs. Its tag follows the package version, so a
# pipeline compiled from a release runs the code it was compiled from.
IMAGE = "ghcr.io/homefeed-platform/homefeed:0.1.0"
BACKENDS = ("local", "kuberay", "jobs")
WORKSPACE_PVC = "homefeed-work"  # created by the manifests
WORKSPACE_MOUNT = "/mnt/homefeed-work"
MOUNT_ENV = "HOMEFEED_WORK_MOUNT"  # the staging folder, where it is not the workspace volume's mount
JOB_END_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
CALL_FILE, RESULT_FILE = "call.json", "result.json"


@dataclass(frozen=True)
class RayBackend:
    kind: str = "local"
    workers: int = 2
    gpus: int = 0  # per worker, on KubeRay
    address: str = ""  # jobs: the Jobs API, http://HOST:8265
    mount: str = field(default_factory=lambda: os.environ.get(MOUNT_ENV, WORKSPACE_MOUNT))
    poll_s: float = 10.0  # how often the RayJob's or the job's status is read

    def __post_init__(self) -> None:
        if self.kind not in BACKENDS:
            raise ValueError(f"ray_backend must be one of {BACKENDS}, got {self.kind!r}")
        if self.kind == "jobs" and not self.address.startswith(("http://", "https://")):
            raise ValueError(
                f"ray_backend=jobs needs ray_address, the Jobs API's http(s)://HOST:PORT; got {self.address!r}"
            )
        least = 0 if self.kind == "local" else 1  # local: 0 trains in the step's process (Ray Train's local mode)
        if self.workers < least or self.gpus < 0:
            raise ValueError(
                f"ray_workers must be >= {least} with ray_backend={self.kind} and gpus >= 0, got {self.workers}, {self.gpus}"
            )


def _steps() -> dict[str, Callable[..., dict]]:
    """The steps that may run remotely, by name: each takes JSON-able keyword arguments only."""
    from pipelines import steps

    return {
        "pretrain_ids": steps.pretrain_ids_step,
        "train_retrieval": steps.train_retrieval_step,
        "train_ranking": steps.train_ranking_step,
    }


def run_step(
    step: str,
    kwargs: dict,
    backend: RayBackend,
    job_id: str,
    inputs: Sequence[str] = (),
    outputs: Sequence[str] = (),
    on_status: Callable[[dict], None] | None = None,
) -> dict:
    """Run `step(**kwargs)` on `backend`; `inputs`/`outputs` name the kwargs that are directories to stage in and
    copy back (kuberay, jobs). `job_id` must be unique per task run (the KFP run and task): it names the RayJob or
    the job."""
    if step not in _steps():
        raise ValueError(f"unknown step {step!r}; remote steps: {sorted(_steps())}")
    if backend.kind == "local":
        return _steps()[step](**kwargs)
    from components.cluster.rayjob import rayjob_name

    work = Path(backend.mount) / "jobs" / rayjob_name(step.replace("_", "-"), job_id)
    call_file = _stage(step, kwargs, work, inputs, outputs)
    if backend.kind == "kuberay":
        _run_on_kuberay(step, job_id, backend, call_file, on_status)
    else:
        _run_on_ray_jobs(work.name, backend, call_file, on_status)
    return _collect(kwargs, work, outputs)


def _entrypoint(call_file: Path | str) -> str:
    """What the Ray cluster runs for a step, the same on either remote backend."""
    return f"python -m pipelines.ray_backend {call_file}"


def _stage(step: str, kwargs: dict, work: Path, inputs: Sequence[str], outputs: Sequence[str]) -> Path:
    """The call file of `step` in `work` on the shared volume, its input folders copied there; returns its path."""
    if work.exists():
        shutil.rmtree(work)  # a retried task starts clean
    remote = dict(kwargs)
    for key in inputs:
        remote[key] = str(shutil.copytree(kwargs[key], work / "in" / key))
    for key in outputs:
        remote[key] = str(work / "out" / key)
    work.mkdir(parents=True, exist_ok=True)
    (work / CALL_FILE).write_text(json.dumps({"step": step, "kwargs": remote}, indent=2) + "\n")
    return work / CALL_FILE


def _collect(kwargs: dict, work: Path, outputs: Sequence[str]) -> dict:
    """What the job returned, its output folders copied back to where the step's caller wants them."""
    result = json.loads((work / RESULT_FILE).read_text())
    for key in outputs:
        shutil.copytree(work / "out" / key, kwargs[key], dirs_exist_ok=True)
    shutil.rmtree(work)
    return result


def rayjob_spec(step: str, job_id: str, backend: RayBackend, call_file: str, namespace: str):
    """The RayJob a kuberay step submits: `python -m pipelines.ray_backend <call_file>` on the project image, with the
    shared workspace volume on every Ray pod. manifests/templates/rayjob.yaml is this for one step, rendered
    (tests/manifests check that it still is)."""
    from components.cluster.rayjob import RayJobSpec, rayjob_name

    slug = step.replace("_", "-")
    return RayJobSpec(
        name=rayjob_name(slug, job_id),
        namespace=namespace,
        image=IMAGE,
        entrypoint=_entrypoint(call_file),
        runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}},
        workers=backend.workers,
        worker_gpus=backend.gpus,
        pvc_name=WORKSPACE_PVC,
        mount_path=backend.mount,
        # homefeed.io/ray=member lets the Ray pods reach each other (manifests/base/training/network.yaml)
        labels={"app.kubernetes.io/part-of": "homefeed", "homefeed/step": slug, "homefeed.io/ray": "member"},
    )


def _run_on_kuberay(step: str, job_id: str, backend: RayBackend, call_file: Path, on_status) -> None:
    from components.cluster.kube import api_client, current_namespace
    from components.cluster.rayjob import run_rayjob

    spec = rayjob_spec(step, job_id, backend, str(call_file), current_namespace())
    run_rayjob(spec, api_client(), poll_s=backend.poll_s, on_status=on_status)


def _run_on_ray_jobs(name: str, backend: RayBackend, call_file: Path, on_status) -> None:
    """Submit the step's entrypoint to the Ray cluster at `backend.address` and follow it to its end: the job's log
    goes to this process' stdout as it grows (the KFP task's log), a change of status to `on_status`
    ({"job": id, "status": ...}); RuntimeError with the log's tail unless it SUCCEEDED."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(backend.address)
    # the Jobs API refuses a second job of one id, and a retried KFP task keeps its id
    job = client.submit_job(
        entrypoint=_entrypoint(call_file),
        submission_id=f"{name}-{uuid.uuid4().hex[:6]}",
        runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}},
        metadata={"app.kubernetes.io/part-of": "homefeed"},
    )
    seen, last = 0, None
    while True:
        status = str(client.get_job_status(job).value)
        log = client.get_job_logs(job)
        sys.stdout.write(log[seen:])
        seen = len(log)
        if on_status is not None and status != last:
            on_status({"job": job, "status": status})
        last = status
        if status in JOB_END_STATES:
            break
        time.sleep(backend.poll_s)
    if status != "SUCCEEDED":
        raise RuntimeError(f"Ray job {job} at {backend.address} ended {status}:\n{log[-3000:]}")


TEMPLATE_HEADER = """\
# The RayJob a training step submits with ray_backend=kuberay (pipelines/ray_backend.py rayjob_spec), here for
# train_ranking with 2 workers of 1 GPU. The pipelines create one per step and run, named from the KFP run and task
# ids; this file is for reading and review, and kustomize does not apply it. Regenerate it with
#   python -m pipelines.ray_backend --template > manifests/templates/rayjob.yaml
# (tests/manifests check that it matches the code, the RayJob CRD and the security policy).
"""


def rayjob_template() -> str:
    """manifests/templates/rayjob.yaml: the RayJob of the ranking step, placeholders for the per-run parts."""
    import yaml

    from components.cluster.rayjob import rayjob_manifest

    backend = RayBackend(kind="kuberay", workers=2, gpus=1)
    spec = rayjob_spec(
        "train_ranking", "<run id>/<task id>", backend, f"{backend.mount}/jobs/<job>/call.json", "homefeed"
    )
    return TEMPLATE_HEADER + yaml.safe_dump(rayjob_manifest(spec), sort_keys=False)


def main(argv: list[str] | None = None) -> None:
    """The RayJob's entrypoint: run the call in `argv[0]` (its `ray.init()` joins the job's cluster through
    RAY_ADDRESS) and write what the step returned next to it. `--template` prints manifests/templates/rayjob.yaml."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--template"]:
        sys.stdout.write(rayjob_template())
        return
    if len(args) != 1:
        raise SystemExit("usage: python -m pipelines.ray_backend <call.json> | --template")
    call_path = Path(args[0])
    call = json.loads(call_path.read_text())
    result = _steps()[call["step"]](**call["kwargs"])
    (call_path.parent / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
