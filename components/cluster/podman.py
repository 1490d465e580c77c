"""Pods on this machine with podman (`podman kube play`), the container runtime the local deployment uses.

podman reads its settings from image/containers.conf unless CONTAINERS_CONF names another file: on a sandboxed
build machine every container start fails without its ulimits and runc (the file says why).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

CONTAINERS_CONF = Path(__file__).resolve().parents[2] / "image" / "containers.conf"


def _env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """`podman args...`; a failure raises RuntimeError with podman's own message."""
    proc = subprocess.run(["podman", *args], env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def available() -> bool:
    return shutil.which("podman") is not None


def image_exists(tag: str) -> bool:
    return available() and podman("image", "exists", tag, check=False).returncode == 0


def containers(pod: str) -> list[dict]:
    """The containers of pod `pod` (name, state), none when it does not exist."""
    out = podman("ps", "--all", "--filter", f"pod={pod}", "--format", "{{.Names}} {{.State}}", check=False).stdout
    return [dict(zip(("name", "state"), line.split(maxsplit=1), strict=True)) for line in out.splitlines() if line]


def logs(pod: dict) -> str:
    name = pod["metadata"]["name"]
    return "\n".join(
        podman("logs", f"{name}-{c['name']}", check=False).stdout[-3000:] for c in pod["spec"]["containers"]
    )


@contextlib.contextmanager
def played(pod: dict, work_dir: Path) -> Iterator[dict]:
    """Pod `pod` started with `podman kube play`, removed with everything it started on exit (`kube down`)."""
    path = Path(work_dir) / f"{pod['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(pod, sort_keys=False))
    podman("kube", "play", "--replace", str(path))  # like `kubectl apply`: a pod of the same name is replaced
    try:
        yield pod
    finally:
        # `kube down` stops and removes the pod and its containers (podman 4.3 has no --force; volumes are
        # hostPaths here, components/cluster/pods.py, so nothing else is left)
        podman("kube", "down", str(path))


def wait_ready(pod: dict, timeout_s: float = 180.0) -> str:
    """Polls the first container's readinessProbe (an httpGet, on the host port its container port maps to) until
    it answers 200; returns the base url. RuntimeError with the containers' logs when it exits or times out."""
    container = pod["spec"]["containers"][0]
    probe = container["readinessProbe"]["httpGet"]
    host_port = next(p["hostPort"] for p in container["ports"] if p["containerPort"] == probe["port"])
    base = f"http://127.0.0.1:{host_port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + probe["path"], timeout=2).status_code == 200:
                return base
        states = [c["state"] for c in containers(pod["metadata"]["name"]) if not c["name"].endswith("-infra")]
        if states and all(s.startswith("exited") for s in states):
            break
        time.sleep(1)
    raise RuntimeError(f"pod {pod['metadata']['name']} did not become ready:\n{logs(pod)}")
