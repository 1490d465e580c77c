"""The local deployment: the champion's model servers, kept running on this machine between pipeline runs.

The laptop stand-in for the InferenceServices a cluster deploy patches. A deployment directory holds

    deployment.json     the version served, its bundle, the feature repository, and each server's url, port, pid
    releases/v<N>/      bundle of version N, fetched from the registry (sha256-checked): retrieval/ ranking/ index/
    logs/v<N>/          the servers' logs

A deploy restarts the three servers (retrieval, ranking, homefeed) on the new bundle, on the ports the deployment
already uses, so a client keeps its URLs. If the new servers do not come up, the previous version is started again
and the deploy fails: a failed rollout leaves the last good version serving. The servers run in sessions of their
own (components/cluster/launcher.py), so they outlive the pipeline step that started them; `undeploy` stops them by pid.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from components.cluster.launcher import ServerFailed, free_ports, homefeed_specs, start_servers, stop_pids

STATE_FILE = "deployment.json"
SERVER_NAMES = ("retrieval", "ranking", "homefeed")


def read_state(deploy_dir: Path) -> dict | None:
    """The deployment's state, or None when nothing was ever deployed there."""
    path = Path(deploy_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def release_dir(deploy_dir: Path, version: int) -> Path:
    return Path(deploy_dir) / "releases" / f"v{version}"


def deploy(
    deploy_dir: Path, version: int, features_dir: Path, timeout_s: float = 180.0, homefeed_args: list[str] | None = None
) -> dict:
    """Serve `release_dir(deploy_dir, version)` (already fetched) with `features_dir`; returns the new state.

    `homefeed_args`: more `python -m serving homefeed` options (the event bus its impressions go to, client time),
    kept in the state and used again by every later release until given anew, as a cluster keeps an
    InferenceService's spec when a rollout changes its storage URI (None: the previous deploy's).
    Raises RuntimeError when the new version's servers do not become ready; the previous version then serves again.
    """
    deploy_dir = Path(deploy_dir).resolve()
    bundle = release_dir(deploy_dir, version)
    for part in ("retrieval", "ranking", "index"):
        if not (bundle / part).is_dir():
            raise FileNotFoundError(f"release v{version} in {bundle} has no {part}/ folder")
    previous = read_state(deploy_dir)
    if homefeed_args is None:
        homefeed_args = list((previous or {}).get("homefeed_args", []))
    ports = [previous["servers"][n]["port"] for n in SERVER_NAMES] if _serving(previous) else free_ports(3)
    if _serving(previous):
        stop_pids([s["pid"] for s in previous["servers"].values()])
    try:
        state = _start(deploy_dir, version, bundle, Path(features_dir), ports, timeout_s, homefeed_args)
    except ServerFailed as exc:
        if not _serving(previous):
            raise RuntimeError(f"v{version} did not start: {exc}") from exc
        _start(deploy_dir, previous["version"], Path(previous["bundle"]), Path(previous["features"]), ports, timeout_s,
               list(previous.get("homefeed_args", [])))  # fmt: skip
        raise RuntimeError(f"v{version} did not start, v{previous['version']} serves again: {exc}") from exc
    return state


def undeploy(deploy_dir: Path) -> dict | None:
    """Stop the deployment's servers (if any run) and mark it stopped; returns the state as it was."""
    state = read_state(deploy_dir)
    if _serving(state):
        stop_pids([s["pid"] for s in state["servers"].values()])
        _write(Path(deploy_dir), {**state, "status": "stopped"})
    return state


def _start(deploy_dir: Path, version: int, bundle: Path, features: Path, ports: list[int], timeout_s: float,
           homefeed_args: list[str]) -> dict:  # fmt: skip
    specs = homefeed_specs(bundle / "retrieval", bundle / "ranking", features, bundle / "index", device="cpu")
    # the impressions name the release they were served by
    versions = ["--model-version", str(version), "--index-version", str(version)]
    specs[-1] = replace(specs[-1], args=[*specs[-1].args, *versions, *homefeed_args])
    servers = start_servers(specs, deploy_dir / "logs" / f"v{version}", ports=ports, timeout_s=timeout_s)
    state = {
        "status": "serving",
        "version": version,
        "bundle": str(bundle),
        "features": str(features.resolve()),
        "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "homefeed_args": list(homefeed_args),
        "servers": {
            s.name: {"url": s.url, "port": int(s.url.rsplit(":", 1)[1]), "pid": s.process.pid, "log": str(s.log)}
            for s in servers
        },
    }
    _write(deploy_dir, state)
    return state


def _serving(state: dict | None) -> bool:
    return bool(state) and state.get("status") == "serving"


def _write(deploy_dir: Path, state: dict) -> None:
    tmp = deploy_dir / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(deploy_dir / STATE_FILE)  # a reader sees the old state or the new one
