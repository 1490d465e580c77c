"""Model servers as local processes on loopback: start, wait until ready, and always stop.

The laptop stand-in for an InferenceService: each server is `python -m serving <kind> ...` on a free port, logging to
`<log_dir>/<name>.log`. A server is ready when `GET /v1/models/<name>` answers 200 with "ready": true, the same
endpoint KServe's readiness probe reads. Each process leads a session of its own, so stopping it signals the whole
group: anything it started goes with it.

Example:
    specs = [ServerSpec("retrieval", ["retrieval", "--model-dir", d, ...]),
             ServerSpec("homefeed", ["homefeed", "--retrieval-url", "{retrieval}", ...])]
    with running_servers(specs, log_dir) as urls:
        httpx.post(f"{urls['homefeed']}/v1/models/homefeed:predict", json={"instances": [{"user_id": 1}]})
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
STOP_GRACE_S = 10.0
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class ServerSpec:
    """One server: `name` is its model name (the readiness path), `args` follow `python -m serving` (without
    --http-port). An arg that is exactly `{<name>}` of a spec started alongside becomes that server's URL: every
    port is chosen before any server starts, so servers that call each other start together."""

    name: str
    args: Sequence[str]
    # The model the server registers, for its readiness path, when it differs from `name`: two servers of one kind
    # (an experiment's arms) need distinct names but serve the same model name.
    model: str = ""

    @property
    def model_name(self) -> str:
        return self.model or self.name


@dataclass
class RunningServer:
    name: str
    url: str
    process: subprocess.Popen
    log: Path
    model: str = ""


class ServerFailed(RuntimeError):
    """A server exited or did not become ready in time; the message ends with the tail of its log."""


def homefeed_specs(
    retrieval_dir: Path,
    ranking_dir: Path,
    features_dir: Path,
    index_dir: Path,
    candidates: int = 200,
    device: str | None = None,
) -> list[ServerSpec]:
    """The three servers of the homefeed, from the pipeline's artifact directories: retrieval, ranking, homefeed."""
    return [
        retrieval_spec(retrieval_dir, features_dir, index_dir),
        *ranked_feed_specs(ranking_dir, features_dir, index_dir, candidates, device),
    ]


def retrieval_spec(retrieval_dir: Path, features_dir: Path, index_dir: Path, name: str = "retrieval") -> ServerSpec:
    """The retrieval server; a `name` other than "retrieval" starts a second one beside it (it still serves the
    model "retrieval")."""
    args = ["--model-dir", str(retrieval_dir), "--features-dir", str(features_dir), "--index-dir", str(index_dir)]
    return ServerSpec(name, ["retrieval", *args], model="retrieval")


def ranked_feed_specs(
    ranking_dir: Path,
    features_dir: Path,
    index_dir: Path,
    candidates: int = 200,
    device: str | None = None,
    arm: str = "",
    retrieval: str = "retrieval",
) -> list[ServerSpec]:
    """A ranking server and the homefeed server in front of it and of the retrieval server named `retrieval`.

    `arm` names a second pair beside the first (an experiment's arms): the servers are then `ranking-<arm>` and
    `homefeed-<arm>`, and they still serve the models "ranking" and "homefeed".
    """
    suffix = f"-{arm}" if arm else ""
    ranking = ["ranking", "--model-dir", str(ranking_dir), "--features-dir", str(features_dir)]
    ranking += ["--index-dir", str(index_dir), *(["--device", device] if device else [])]
    homefeed = ["homefeed", "--retrieval-url", f"{{{retrieval}}}", "--ranking-url", f"{{ranking{suffix}}}"]
    homefeed += ["--index-dir", str(index_dir)]  # its popular pins, should retrieval be down
    return [
        ServerSpec(f"ranking{suffix}", ranking, model="ranking"),
        ServerSpec(f"homefeed{suffix}", [*homefeed, "--candidates", str(candidates)], model="homefeed"),
    ]


def working_copy(features_dir: Path, index_dir: Path | None, work_dir: Path) -> tuple[Path, Path | None]:
    """Copies of the feature repository and the pin index under `work_dir` (features/, index/), for servers and a
    stream processor that write to them; returns their paths (index None when `index_dir` is None). The targets
    must not exist yet (FileExistsError): a copy left by an earlier run carries that run's actions.

    A pipeline run's artifacts are its record of what was trained and served, and pushed actions would change its
    online store; and Milvus Lite lets one process open an index file, which may be the run's local deployment or
    this very process. The index is copied without its LOCK file, which belongs to whoever holds the original.
    """
    skip_lock = shutil.ignore_patterns("LOCK")
    features = Path(shutil.copytree(features_dir, Path(work_dir) / "features", ignore=skip_lock))
    index = None if index_dir is None else Path(shutil.copytree(index_dir, Path(work_dir) / "index", ignore=skip_lock))
    return features, index


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports free right now (all bound at once, so none is handed out twice).

    Another process could take one before its server binds it; that server then exits and the readiness wait
    reports it with its log.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


@contextlib.contextmanager
def running_servers(specs: Sequence[ServerSpec], log_dir: Path, timeout_s: float = 120.0) -> Iterator[dict[str, str]]:
    """Start every server of `specs`, wait until all are ready, yield {name: base URL}; stop them all on exit.

    Raises ServerFailed if one exits or is not ready within `timeout_s` (the servers load concurrently). The servers
    are stopped however the block ends, an exception in it included.
    """
    servers = start_servers(specs, log_dir, timeout_s=timeout_s)
    try:
        yield {s.name: s.url for s in servers}
    finally:
        stop_servers(servers)


def start_servers(
    specs: Sequence[ServerSpec], log_dir: Path, ports: Sequence[int] | None = None, timeout_s: float = 120.0
) -> list[RunningServer]:
    """Start every server of `specs` (on `ports`, else on free ones) and return them once all are ready; they keep
    running until stopped (`stop_servers`, or `stop_pids` from another process). If one fails, all are stopped and
    ServerFailed is raised."""
    names = [s.name for s in specs]
    if len(set(names)) < len(names):
        raise ValueError(f"server names must be distinct, got {names}")
    ports = list(ports) if ports is not None else free_ports(len(specs))
    if len(ports) != len(specs):
        raise ValueError(f"{len(specs)} servers need {len(specs)} ports, got {ports}")
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    urls = {s.name: f"http://{HOST}:{port}" for s, port in zip(specs, ports, strict=True)}
    servers: list[RunningServer] = []
    try:
        for spec in specs:
            args = [_url_or_arg(a, urls) for a in spec.args]
            server = start_server(spec.name, args, urls[spec.name], log_dir / f"{spec.name}.log")
            server.model = spec.model_name
            servers.append(server)
        deadline = time.monotonic() + timeout_s
        for server in servers:
            left = max(deadline - time.monotonic(), 0.0)
            wait_until_ready(server.url, server.model, left, process=server.process, log=server.log)
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def start_server(name: str, args: Sequence[str], url: str, log: Path) -> RunningServer:
    """`python -m serving <args> --http-port <url's port>` in a new session, stdout and stderr into `log`."""
    port = httpx.URL(url).port
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_repo_root(), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", *args, "--http-port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return RunningServer(name, url, process, log)


def wait_until_ready(
    url: str,
    name: str,
    timeout_s: float = 120.0,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
    poll_s: float = 0.25,
) -> None:
    """Poll `GET {url}/v1/models/{name}` until the model is ready.

    Raises ServerFailed when `timeout_s` passes, or when `process` (the server, if this caller started it) exits
    first; the message ends with the tail of `log` when given.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise ServerFailed(f"{name} exited with code {process.returncode} before it was ready{_tail(log)}")
        if is_ready(url, name):
            return
        if time.monotonic() >= deadline:
            raise ServerFailed(f"{name} at {url} was not ready after {timeout_s:.0f} s{_tail(log)}")
        time.sleep(poll_s)


def is_ready(url: str, name: str) -> bool:
    """Whether `GET {url}/v1/models/{name}` reports the model ready (False while the server is not listening)."""
    try:
        response = httpx.get(f"{url}/v1/models/{name}", timeout=2.0)
        return response.status_code == 200 and response.json().get("ready") is True
    except (httpx.HTTPError, ValueError, AttributeError):  # not listening yet, or something else answering there
        return False


def stop_servers(servers: Sequence[RunningServer], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to every server's process group at once; SIGKILL to those still running after `grace_s`."""
    for server in servers:
        _signal_group(server.process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for server in servers:
        try:
            server.process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            _signal_group(server.process, signal.SIGKILL)
            server.process.wait()
        # the leader is gone; whatever it started in its group has no one else to stop it
        _signal_group(server.process, signal.SIGKILL)


def stop_pids(pids: Sequence[int], grace_s: float = STOP_GRACE_S) -> None:
    """Stop servers this process did not start (a deployment's recorded pids): SIGTERM to each one's process group,
    SIGKILL after `grace_s`. A pid that no longer runs `python -m serving` (exited, or reused by another program) is
    left alone."""
    ours = [pid for pid in pids if _is_server(pid)]
    for pid in ours:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(alive(pid) for pid in ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in ours:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _is_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-m" in cmdline and b"serving" in cmdline


def alive(pid: int) -> bool:
    """Running and not a zombie (an exited child of a process that has not reaped it yet counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


def _url_or_arg(arg: str, urls: dict[str, str]) -> str:
    return urls.get(arg[1:-1], arg) if arg.startswith("{") and arg.endswith("}") else arg


def _tail(log: Path | None, chars: int = LOG_TAIL_CHARS) -> str:
    if log is None:
        return ""
    text = log.read_text(errors="replace") if log.exists() else "(no log written)"
    return f"; the end of {log}:\n{text[-chars:]}"


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _repo_root() -> str:
    """The folder holding the `serving` package, so the child imports this very code whatever its working dir."""
    return str(Path(__file__).resolve().parent.parent)
