"""KubeRay's part, played by the tests against the real API server, which runs no controllers
(components/cluster/apiserver.py): what the operator would write into a RayJob's status, written through the status
subresource as the operator writes it.

- `ScriptedKubeRay` is the poller's `sleep`: between two of its reads it moves the RayJob to the next status of a
  script (statuses as KubeRay reports them: tests/fixtures/recorded/kuberay), on a fake clock.
- `KubeRayOnRay` does what the operator's submitter does with a RayJob it sees created: it submits the RayJob's
  entrypoint and runtime environment to a running Ray cluster through the Jobs API, then mirrors the job's state into
  the RayJob's `jobDeploymentStatus`/`jobStatus` (KubeRay's names) until it ends. The Ray cluster stands in for the
  one KubeRay would have brought up from `rayClusterSpec`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import yaml
from kubernetes import client, watch
from recorded_api import FakeTime

from components.cluster.rayjob import GROUP, PLURAL, VERSION

# Ray's job states -> (KubeRay's jobDeploymentStatus, what `message` says)
DEPLOYMENT = {"PENDING": "Running", "RUNNING": "Running", "SUCCEEDED": "Complete", "FAILED": "Failed",
              "STOPPED": "Complete"}  # fmt: skip


def write_status(api: client.CustomObjectsApi, namespace: str, name: str, status: dict[str, Any]) -> dict:
    """Replace the RayJob's status (the status subresource: its spec is untouched, its resourceVersion checked)."""
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    obj["status"] = status
    return api.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, obj)


class ScriptedKubeRay(FakeTime):
    """A fake clock and `sleep` for run_rayjob: each sleep writes the next scripted status, as if KubeRay had moved
    the job on while the poller waited; when the script is spent, the status stays as it is."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, statuses: Iterable[dict]) -> None:
        super().__init__()
        self.api = client.CustomObjectsApi(api_client)
        self.namespace, self.name = namespace, name
        self.script = list(statuses)

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.script:
            write_status(self.api, self.namespace, self.name, self.script.pop(0))


class KubeRayOnRay:
    """While open, watches `namespace` for created RayJobs and runs each on the Ray cluster at `ray_address`
    (its Jobs API), writing the RayJob's status as the job moves on. `submitted` holds the entrypoints run."""

    def __init__(self, api_client: client.ApiClient, namespace: str, ray_address: str, poll_s: float = 0.5) -> None:
        from ray.job_submission import JobSubmissionClient

        self.api = client.CustomObjectsApi(api_client)
        self.namespace, self.poll_s = namespace, poll_s
        self.ray = JobSubmissionClient(ray_address)
        self.submitted: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._watch = watch.Watch()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> KubeRayOnRay:
        started = threading.Event()
        self._threads.append(threading.Thread(target=self._follow, args=(started,), daemon=True))
        self._threads[0].start()
        started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if self.errors and exc[0] is None:
            raise self.errors[0]

    def _follow(self, started: threading.Event) -> None:
        listed = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        version = listed["metadata"]["resourceVersion"]
        started.set()
        # short server-side watches, resumed from the last version seen: the loop notices `_stop` within a second
        while not self._stop.is_set():
            stream = self._watch.stream(
                self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                resource_version=version, timeout_seconds=1,
            )  # fmt: skip
            for event in stream:
                version = event["object"]["metadata"]["resourceVersion"]
                if event["type"] == "ADDED":
                    job = threading.Thread(target=self._run, args=(event["object"],), daemon=True)
                    self._threads.append(job)
                    job.start()

    def _run(self, rayjob: dict) -> None:
        name, spec = rayjob["metadata"]["name"], rayjob["spec"]
        try:
            write_status(self.api, self.namespace, name, {"jobDeploymentStatus": "Initializing"})
            runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or None
            job_id = self.ray.submit_job(entrypoint=spec["entrypoint"], runtime_env=runtime_env, submission_id=name)
            self.submitted.append(spec["entrypoint"])
            last = None
            while not self._stop.is_set():
                state = str(self.ray.get_job_status(job_id).value)
                if state != last:
                    status = {"jobId": job_id, "jobStatus": state, "jobDeploymentStatus": DEPLOYMENT[state]}
                    if state == "FAILED":
                        status |= {"reason": "AppFailed", "message": self.ray.get_job_logs(job_id)[-2000:]}
                    write_status(self.api, self.namespace, name, status)
                    last = state
                if state in ("SUCCEEDED", "FAILED", "STOPPED"):
                    return
                self._stop.wait(self.poll_s)
        except BaseException as exc:  # reported when the block ends
            self.errors.append(exc)
