"""Pods on this machine with podman (`podman kube play`), the container runtime the local deployment uses.

podman reads its settings from image/containers.conf unless CONTAINERS_CONF names another file: on a sandboxed
build machine every container start fails without its ulimits and runc (the file says why).
"""

from __future__ import annotations

import contextlib
import copy
import json
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
    """The containers of pod `pod`: name, state (created, running, exited, ...) and status (`Up 5 seconds ago`);
    none when it does not exist. (podman 4.3's `ps --format {{.State}}` prints the status: JSON has both.)"""
    out = podman("ps", "--all", "--filter", f"pod={pod}", "--format", "json", check=False).stdout
    return [
        {"name": c["Names"][0], "state": c["State"], "status": c.get("Status", "")} for c in json.loads(out or "[]")
    ]


def logs(pod: dict) -> str:
    name = pod["metadata"]["name"]
    return "\n".join(
        podman("logs", f"{name}-{c['name']}", check=False).stdout[-3000:] for c in pod["spec"]["containers"]
    )


def pod_file(pod: dict, work_dir: Path) -> Path:
    return Path(work_dir) / f"{pod['metadata']['name']}.yaml"


def play(pod: dict, work_dir: Path, network: str | None = None, ip: str | None = None) -> Path:
    """Start pod `pod` with `podman kube play` (on `network` at `ip` when given), replacing a pod of the same name
    as `kubectl apply` would; returns the YAML file it played, which `down` takes."""
    path = pod_file(pod, work_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(pod, sort_keys=False))
    played = path.with_suffix(".played.yaml")
    played.write_text(yaml.safe_dump(_unpublished(pod), sort_keys=False))
    for written in (path, played):  # the Secrets' values are in them
        written.chmod(0o600)
    where = [*(["--network", network] if network else []), *(["--ip", ip] if ip else [])]
    podman("kube", "play", "--replace", *where, str(played))
    return path


def _unpublished(pod: dict) -> dict:
    """`pod` as podman 4.3 should get it: without the container ports that have no hostPort, which it would
    otherwise publish on the host under the same numbers (so two pods listening on 8080 could not both start), and
    with probes naming their port by number, since the names went with the ports."""
    pod = copy.deepcopy(pod)
    for container in pod["spec"]["containers"]:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            action = container.get(probe, {}).get("httpGet") or container.get(probe, {}).get("tcpSocket")
            if action:
                action["port"] = port_number(container, action["port"])
        container["ports"] = [p for p in container.get("ports", []) if "hostPort" in p]
    return pod


def down(path: Path) -> None:
    """Stop and remove the pod of YAML file `path` and its containers (podman 4.3's `kube down` has no --force;
    volumes are hostPaths here, components/cluster/pods.py, so nothing else is left)."""
    podman("kube", "down", str(path))


@contextlib.contextmanager
def played(pod: dict, work_dir: Path) -> Iterator[dict]:
    """Pod `pod` started with `podman kube play`, removed with everything it started on exit (`kube down`)."""
    path = play(pod, work_dir)
    try:
        yield pod
    finally:
        down(path)


def network_create(name: str, subnet: str) -> None:
    """A bridge network `name` on `subnet`, unless it exists."""
    if podman("network", "exists", name, check=False).returncode != 0:
        podman("network", "create", "--subnet", subnet, name)


def network_remove(name: str) -> None:
    if podman("network", "exists", name, check=False).returncode == 0:
        podman("network", "rm", name)


def subnets() -> set[str]:
    """The subnets of podman's networks."""
    out = podman("network", "inspect", *podman("network", "ls", "--format", "{{.Name}}").stdout.split()).stdout
    return {s["subnet"] for n in json.loads(out or "[]") for s in n.get("subnets", [])}


def port_number(container: dict, port: int | str) -> int:
    """A probe's or Service's port as a number: itself, or the container port of that name."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def base_url(pod: dict, port: int | str, address: str | None = None) -> str:
    """Where the first container's `port` (a number or a port name) is reached from this machine: the pod's
    `address`, else the host port it is published on."""
    container = pod["spec"]["containers"][0]
    number = port_number(container, port)
    if address:
        return f"http://{address}:{number}"
    host_port = next(p["hostPort"] for p in container["ports"] if p["containerPort"] == number and "hostPort" in p)
    return f"http://127.0.0.1:{host_port}"


def ready(pod: dict, address: str | None = None) -> bool:
    """Whether the first container passes its readinessProbe now (httpGet or exec); without one, whether it runs
    (as Kubernetes counts a container without a probe ready once it has started)."""
    container = pod["spec"]["containers"][0]
    probe = container.get("readinessProbe", {})
    name = f"{pod['metadata']['name']}-{container['name']}"
    if "httpGet" in probe:
        url = base_url(pod, probe["httpGet"]["port"], address) + probe["httpGet"]["path"]
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=2).status_code == 200
        return False
    if "exec" in probe:
        return podman("exec", name, *probe["exec"]["command"], check=False).returncode == 0
    return any(c["name"] == name and c["state"] == "running" for c in containers(pod["metadata"]["name"]))


def wait_ready(pod: dict, timeout_s: float = 180.0, address: str | None = None) -> str:
    """Polls the first container's readiness (`ready`) until it passes; returns the base url of its first port.
    RuntimeError with the containers' logs when they all exit or it times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready(pod, address):
            return base_url(pod, pod["spec"]["containers"][0]["ports"][0]["containerPort"], address)
        states = [c["state"] for c in containers(pod["metadata"]["name"]) if not c["name"].endswith("-infra")]
        if states and all(s in ("exited", "stopped") for s in states):
            break
        time.sleep(1)
    raise RuntimeError(f"pod {pod['metadata']['name']} did not become ready:\n{logs(pod)}")
