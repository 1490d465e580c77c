"""Fixtures of the integration tier."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.cluster.launcher import homefeed_specs, running_servers

STACK_CANDIDATES = 200  # retrieval's candidates per homefeed request on the shared stack


@pytest.fixture(scope="session")
def tiny_stack(tiny_artifacts, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Retrieval, ranking and homefeed on `tiny_artifacts` as real processes on loopback (started by the launcher),
    once per session, for the tests that only send them requests: {name: url}; logs under the fixture's folder.

    Retrieval reads a copy of the index: the test process holds the original Milvus Lite file open (and locked).
    """
    root = tmp_path_factory.mktemp("tiny_stack")
    index = shutil.copytree(tiny_artifacts["index"], root / "index", ignore=shutil.ignore_patterns("LOCK"))
    art = tiny_artifacts
    specs = homefeed_specs(
        art["retrieval"], art["ranking"], art["features"], index, candidates=STACK_CANDIDATES, device="cpu"
    )
    with running_servers(specs, root / "logs") as urls:
        yield urls


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory):
    """A real Kubernetes API server for custom resources (etcd + apiextensions-apiserver on loopback,
    components/cluster/apiserver.py) with the vendored upstream CRDs installed, once per session: an APIServer.

    The binaries come from $HOMEFEED_APISERVER_DIR when set (`.ci/run` builds them first), else from
    `bash image/apiserver.sh` (a build of minutes the first time on a machine, then its cache). The tests skip, with
    the script's own message, only when that build cannot be done here (no Debian mirror, no PyPI)."""
    import os
    import subprocess

    from vendored_crds import vendored_crds

    from components.cluster.apiserver import BUILD_SCRIPT, DIR_ENV, install_crds, running_apiserver

    bin_dir = os.environ.get(DIR_ENV)
    if not bin_dir:
        root = Path(__file__).resolve().parents[2]
        build = subprocess.run(["bash", str(root / BUILD_SCRIPT)], capture_output=True, text=True)
        if build.returncode != 0:
            pytest.skip(f"the API server could not be built here: {build.stderr.strip()[-1500:]}")
        bin_dir = build.stdout.strip().splitlines()[-1]
    with running_apiserver(bin_dir, tmp_path_factory.mktemp("apiserver")) as server:
        with server.api_client() as api:
            install_crds(api, [crd.definition() for crd in vendored_crds()])
        yield server


@pytest.fixture
def namespace() -> str:
    """A namespace of its own for one test on `kube_api` (namespaces need not exist on that server)."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kube(kube_api):
    """A client of `kube_api` for one test."""
    with kube_api.api_client() as api:
        yield api


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A real Ray head node with its Jobs API (components/cluster/ray_head.py), once per module that uses it: its
    address, http://127.0.0.1:PORT. Four logical CPUs on two cores: a step's driver and its two Ray Train workers."""
    import tempfile

    from components.cluster.ray_head import ray_head

    # short: Ray's socket paths live under it
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as tmp, ray_head(Path(tmp), num_cpus=4) as address:
        yield address
