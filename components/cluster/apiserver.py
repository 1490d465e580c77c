"""A real Kubernetes API server for custom resources on loopback: etcd and apiextensions-apiserver as local processes.

What it is good for: the API server's own behaviour towards our custom resources, which a scripted fake cannot show
(tests/recorded_api.py replays what we expect): structural-schema validation and pruning, defaults, optimistic
concurrency (409 on a stale resourceVersion), server-side apply and its field ownership, watches, generations.

What it is not: a cluster. apiextensions-apiserver serves CustomResourceDefinitions and the custom resources they
define, nothing of the core API (no Namespace, Pod or Deployment; `kubectl get` fails in discovery, `kubectl --raw`
works) and it runs no controllers, so a RayJob never gets a status. Namespaces need not exist: with no core API the
NamespaceLifecycle admission plugin could never see one, so it is turned off with the other admission plugins that
wait on core-API informers (webhooks and admission policies).

The binaries come from `bash image/apiserver.sh`, which builds them once and prints their directory. Each start makes
fresh certificates (components/cluster/certificates.py), a kubeconfig whose user is in `system:masters`, and an
empty etcd; both processes lead their own process group and are stopped with everything they started.

Example:
    with running_apiserver(bin_dir, work_dir) as server:
        api = kubernetes.client.CustomObjectsApi(server.api_client())
        install_crds(server.api_client(), [crd, ...])
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from components.cluster.certificates import LoopbackPKI, write_loopback_pki
from components.cluster.launcher import HOST, RunningServer, ServerFailed, free_ports, stop_servers

APISERVER = "apiextensions-apiserver"
ETCD = "etcd"
BUILD_SCRIPT = "image/apiserver.sh"
DIR_ENV = "HOMEFEED_APISERVER_DIR"  # where a caller may name an already-built binaries' directory
# `informer-sync` waits for informers of the core API, which this server does not have: it would never pass.
READYZ = "/readyz?exclude=informer-sync"
# Admission plugins that need core-API informers (namespaces, webhook and policy objects) that never sync here.
DISABLED_ADMISSION = (
    "NamespaceLifecycle",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
    "MutatingAdmissionPolicy",
    "ValidatingAdmissionPolicy",
)
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class APIServer:
    """A running server: its URL, a kubeconfig for it (client certificate of a `system:masters` user), its logs."""

    url: str
    kubeconfig: Path
    pki: LoopbackPKI
    log_dir: Path

    def configuration(self) -> client.Configuration:
        """A client configuration read from the kubeconfig, the way operators' tools would read it."""
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return cfg

    def api_client(self) -> client.ApiClient:
        """A new ApiClient for this server (close it, or use it as a context manager, when done)."""
        return client.ApiClient(self.configuration())


def binaries(bin_dir: Path | str) -> dict[str, Path]:
    """{"apiextensions-apiserver": path, "etcd": path} in `bin_dir`; FileNotFoundError naming the build script when
    one is missing or not executable."""
    bin_dir = Path(bin_dir)
    found = {name: bin_dir / name for name in (APISERVER, ETCD)}
    missing = [str(path) for path in found.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"API server binaries missing: {', '.join(missing)}. Build them with `bash {BUILD_SCRIPT}` "
            f"(minutes the first time, then cached); it prints the directory to use (${DIR_ENV})"
        )
    return found


@contextlib.contextmanager
def running_apiserver(bin_dir: Path | str, work_dir: Path, timeout_s: float = 60.0) -> Iterator[APIServer]:
    """Start etcd and apiextensions-apiserver on free loopback ports, wait until the server is ready, yield it; stop
    both however the block ends. `work_dir` receives etcd's data, the certificates, the kubeconfig and the logs
    (logs/etcd.log, logs/apiserver.log).

    Raises ServerFailed, with the tail of the log, when either process exits or the server is not ready within
    `timeout_s`.
    """
    exe = binaries(bin_dir)
    work_dir = Path(work_dir).resolve()
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    pki = write_loopback_pki(work_dir / "pki")
    etcd_port, peer_port, api_port = free_ports(3)
    etcd_url, url = f"http://{HOST}:{etcd_port}", f"https://{HOST}:{api_port}"
    kubeconfig = write_kubeconfig(work_dir / "kubeconfig", url, pki)

    # etcd listens on loopback only, without TLS: nothing but this server talks to it. fsync is off, as the data
    # lives only as long as the run.
    etcd_args = [
        str(exe[ETCD]),
        "--name=homefeed",
        f"--data-dir={work_dir / 'etcd'}",
        f"--listen-client-urls={etcd_url}",
        f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls=http://{HOST}:{peer_port}",
        f"--initial-advertise-peer-urls=http://{HOST}:{peer_port}",
        f"--initial-cluster=homefeed=http://{HOST}:{peer_port}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]
    # The server authenticates by client certificate (our CA) and delegates the rest to "itself" through the
    # kubeconfig: the delegated authorizer lets system:masters through without a SubjectAccessReview, and the health
    # paths are allowed to anyone. The extension-apiserver-authentication ConfigMap it would look up is a core-API
    # object, so the lookup is skipped. Priority and fairness needs core-API objects too.
    api_args = [
        str(exe[APISERVER]),
        f"--etcd-servers={etcd_url}",
        f"--bind-address={HOST}",
        f"--secure-port={api_port}",
        f"--tls-cert-file={pki.server_cert}",
        f"--tls-private-key-file={pki.server_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--authentication-skip-lookup",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez",
        "--enable-priority-and-fairness=false",
        f"--disable-admission-plugins={','.join(DISABLED_ADMISSION)}",
    ]
    servers: list[RunningServer] = []
    try:
        servers.append(_start("etcd", etcd_args, etcd_url, log_dir / "etcd.log", work_dir))
        servers.append(_start("apiserver", api_args, url, log_dir / "apiserver.log", work_dir))
        wait_until_ready(url, pki, servers, timeout_s)
        yield APIServer(url=url, kubeconfig=kubeconfig, pki=pki, log_dir=log_dir)
    finally:
        # The API server first: it would log etcd's disappearance as errors otherwise.
        stop_servers(servers[1:])
        stop_servers(servers[:1])


def write_kubeconfig(path: Path, url: str, pki: LoopbackPKI, name: str = "homefeed-loopback") -> Path:
    """A kubeconfig for `url` that trusts our CA and presents the admin client certificate (files, not inline data,
    so every client reads the same PEMs)."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url, "certificate-authority": str(pki.ca_cert)}}],
        "users": [
            {"name": name, "user": {"client-certificate": str(pki.client_cert), "client-key": str(pki.client_key)}}
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
    return path


def wait_until_ready(url: str, pki: LoopbackPKI, servers: Iterable[RunningServer], timeout_s: float) -> None:
    """Poll `GET {url}/readyz?exclude=informer-sync` until it answers 200; ServerFailed with the log tail when one
    of `servers` exits first or `timeout_s` passes."""
    tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    tls.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(verify=tls, timeout=2.0) as http:
        while True:
            for server in servers:
                if server.process.poll() is not None:
                    raise ServerFailed(
                        f"{server.name} exited with code {server.process.returncode} before the API server was "
                        f"ready{_tail(server.log)}"
                    )
            try:
                response = http.get(url + READYZ)
                if response.status_code == 200:
                    return
                last = f"{response.status_code}: {response.text.strip()[-LOG_TAIL_CHARS:]}"
            except httpx.HTTPError as exc:  # not listening yet
                last = repr(exc)
            if time.monotonic() >= deadline:
                logs = "".join(_tail(s.log) for s in servers)
                raise ServerFailed(f"API server at {url} not ready after {timeout_s:.0f} s (last: {last}){logs}")
            time.sleep(0.1)


def install_crds(api_client: client.ApiClient, crds: Iterable[Mapping[str, Any]], timeout_s: float = 60.0) -> list[str]:
    """Create each CustomResourceDefinition (an existing one of that name is replaced) and wait until all are
    Established, i.e. their custom resources are served; returns their names. RuntimeError naming the CRD when the
    server refuses one (its message says which schema part) or one is not Established within `timeout_s`."""
    api = client.ApiextensionsV1Api(api_client)
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            api.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise RuntimeError(f"CustomResourceDefinition {name} refused ({exc.status}): {exc.body}") from exc
            current = api.read_custom_resource_definition(name)
            body = {**crd, "metadata": {**crd["metadata"], "resourceVersion": current.metadata.resource_version}}
            api.replace_custom_resource_definition(name, body)
        names.append(name)
    deadline = time.monotonic() + timeout_s
    waiting = set(names)
    while waiting:
        for name in sorted(waiting):
            status = api.read_custom_resource_definition_status(name).status
            conditions = {c.type: c for c in (status.conditions if status else None) or []}
            if conditions.get("Established") and conditions["Established"].status == "True":
                waiting.discard(name)
            elif time.monotonic() >= deadline:
                described = {t: f"{c.status} ({c.reason}: {c.message})" for t, c in conditions.items()}
                raise RuntimeError(
                    f"CustomResourceDefinition {name} not Established after {timeout_s:.0f} s: {described}"
                )
        if waiting:
            time.sleep(0.1)
    return names


def _start(name: str, args: list[str], url: str, log: Path, cwd: Path) -> RunningServer:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True
        )
    return RunningServer(name, url, process, log)


def _tail(log: Path, chars: int = LOG_TAIL_CHARS) -> str:
    text = log.read_text(errors="replace") if log.exists() else "(no log written)"
    return f"\n--- the end of {log}:\n{text[-chars:]}"
