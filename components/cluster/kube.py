"""Kubernetes API access shared by the cluster modules: building a client, finding our namespace, readable errors.

The pipeline steps that drive RayJobs and InferenceServices run inside KFP pods (in-cluster service-account
credentials), while operators run the same code from a laptop (kubeconfig), and the tests point it at a loopback fake
API server (an explicit host). `api_client` picks among those three in that order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

# Mounted into every pod with a service account token; the file holds the pod's own namespace.
SA_NAMESPACE_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def api_client(host: str | None = None) -> client.ApiClient:
    """An ApiClient for `host` when given, else in-cluster credentials inside a pod, else the local kubeconfig."""
    cfg = client.Configuration()
    if host:
        cfg.host = host.rstrip("/")
        return client.ApiClient(cfg)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise RuntimeError(
                f"running in a pod (KUBERNETES_SERVICE_HOST is set) but in-cluster config failed: {exc}"
            ) from exc
        return client.ApiClient(cfg)
    try:
        # KUBECONFIG read now: the client library reads it once, at import, and would miss a later change
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg)
    except (ConfigException, OSError) as exc:
        kubeconfig = os.environ.get("KUBECONFIG", "~/.kube/config")
        raise RuntimeError(
            "no Kubernetes API server configured: not running in a pod (KUBERNETES_SERVICE_HOST is unset) and no "
            f"usable kubeconfig at {kubeconfig} ({exc}); pass an explicit API server URL instead"
        ) from exc
    return client.ApiClient(cfg)


def current_namespace(default: str = "homefeed", path: Path | str = SA_NAMESPACE_PATH) -> str:
    """The namespace this pod runs in (from its service-account mount), or `default` outside a pod."""
    p = Path(path)
    if p.is_file():
        namespace = p.read_text().strip()
        if namespace:
            return namespace
    return default


def api_message(exc: ApiException) -> str:
    """The `message` of the Kubernetes Status in the error body, or the raw body when it is not one."""
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else (exc.body or "")
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, TypeError):
        return body.strip()
    if isinstance(parsed, dict) and parsed.get("message"):
        return str(parsed["message"])
    return body.strip()


def api_error(exc: ApiException, action: str) -> RuntimeError:
    """A short RuntimeError for a failed API call: what we were doing, the HTTP status and reason, the API's message.

    The ApiException's own str() dumps every response header; this keeps the log line to what an operator needs.
    """
    message = api_message(exc)
    detail = f": {message}" if message else ""
    return RuntimeError(f"{action} failed with HTTP {exc.status} {exc.reason}{detail}")
