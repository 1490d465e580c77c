"""components.cluster.inference_service with the real kubernetes client, against a real Kubernetes API server.

What matters in the patch is that it changes storageUri and nothing else: the generation moves on by one and every
other field (above all one an operator changed) is as it was. What matters in the wait is the generation: a
Ready=True left over from the previous revision must not end it.

Which test talks to what:
- the real API server (`kube_api`, tests/integration/conftest.py: etcd + apiextensions-apiserver serving KServe's
  InferenceService CRD, vendored unmodified): the InferenceServices are created from the dev overlay's rendered
  manifests, and set_storage_uri, wait_ready and rollout run against them: the patch, the generations, the 404 of a
  missing service, the reads of the status. The server runs no controller, so KServe's part is played by the test:
  between two polls (wait_ready's injected `sleep`) it writes, through the status subresource as KServe's controller
  does, the next status the controller would report (observedGeneration, the IngressReady/PredictorReady/Ready
  conditions, url), taken from the statuses in tests/fixtures/recorded/kserve. The server validates and prunes
  those statuses against upstream's status schema like any other write.
- a replayed response (tests/recorded_api.py): only the 403, which this server cannot give (it has no RBAC: its
  only user is in system:masters).
- neither: the constants against the kserve package, the recorded bodies and a patched object against the vendored
  CRD schema, and is_ready on the recorded statuses.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from recorded_api import FakeTime, RecordedAPI, load_fixture, reply, vendored_crd_validator

from components.cluster import inference_service as isvc
from components.cluster.kube import api_client
from components.cluster.local_cluster import render

pytestmark = pytest.mark.integration

DEV_OVERLAY = Path(__file__).resolve().parents[2] / "manifests" / "overlays" / "dev"
BASE = "/apis/serving.kserve.io/v1beta1/namespaces/homefeed/inferenceservices"
RANKING = f"{BASE}/ranking"
RANKING_URI = "s3://homefeed-models/ranking/v7"
RETRIEVAL_URI = "s3://homefeed-models/retrieval/v12"


def test_constants_match_kserve():
    from kserve.constants import constants

    assert isvc.GROUP == constants.KSERVE_GROUP
    assert isvc.VERSION == constants.KSERVE_V1BETA1_VERSION
    assert isvc.PLURAL == constants.KSERVE_PLURAL_INFERENCESERVICE


@pytest.fixture(scope="module")
def isvc_schema():
    # The schema vendored in tests/fixtures/crds (upstream and commit in SOURCES.md there), so this runs on a clone.
    return vendored_crd_validator("serving.kserve.io_inferenceservices.yaml", "v1beta1")


@pytest.mark.parametrize(
    "name",
    [
        "ranking_patched",
        "ranking_stale_ready",
        "ranking_rolling",
        "ranking_ready",
        "ranking_failing",
        "retrieval_ready",
    ],
)
def test_recorded_bodies_follow_the_crd(isvc_schema, name):
    assert [e.message for e in isvc_schema.iter_errors(load_fixture(f"kserve/{name}"))] == []


def test_the_patched_object_still_follows_the_crd(isvc_schema):
    # The merge patch applied to a served object (RFC 7386: objects merge, scalars replace) stays schema-valid.
    obj = load_fixture("kserve/ranking_ready")
    obj["spec"]["predictor"]["model"].update(isvc.storage_uri_patch(RANKING_URI)["spec"]["predictor"]["model"])
    assert [e.message for e in isvc_schema.iter_errors(obj)] == []
    obj["spec"]["predictor"]["model"]["storageURI"] = RANKING_URI  # the misspelling the API server would prune
    assert any("storageURI" in e.message for e in isvc_schema.iter_errors(obj))


def test_ready_is_judged_at_the_patched_generation():
    stale = load_fixture("kserve/ranking_stale_ready")["status"]
    assert stale["observedGeneration"] == 7 and isvc.is_ready(stale, 7)
    assert not isvc.is_ready(stale, 8)
    assert not isvc.is_ready(load_fixture("kserve/ranking_rolling")["status"], 8)
    assert isvc.is_ready(load_fixture("kserve/ranking_ready")["status"], 8)


def test_forbidden_names_the_missing_permission():
    # Replayed: the real server here has no RBAC to refuse anything.
    with (
        RecordedAPI([reply("PATCH", RANKING, status=403, fixture="kserve/status_forbidden")]) as api,
        pytest.raises(RuntimeError, match="needs the 'patch' verb on inferenceservices.serving.kserve.io") as info,
    ):
        isvc.set_storage_uri(api_client(api.url), "ranking", "homefeed", RANKING_URI)
    api.assert_all_used()
    assert "system:serviceaccount:homefeed:pipeline-runner" in str(info.value)


# ---- against the real API server (tests/integration/conftest.py `kube_api`), KServe played by the test


@pytest.fixture(scope="module")
def dev_isvcs() -> dict[str, dict[str, Any]]:
    """name -> InferenceService as the dev overlay renders it."""
    try:
        objects = render(DEV_OVERLAY)
    except FileNotFoundError as exc:  # no kubectl
        pytest.skip(str(exc))
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "InferenceService"}


def objects(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def create(kube, dev_isvcs, namespace: str, name: str) -> dict[str, Any]:
    """Create InferenceService `name` of the dev overlay in `namespace`; the stored object (generation 1)."""
    body = copy.deepcopy(dev_isvcs[name])
    body["metadata"]["namespace"] = namespace
    obj = objects(kube).create_namespaced_custom_object(isvc.GROUP, isvc.VERSION, namespace, isvc.PLURAL, body)
    assert obj["metadata"]["generation"] == 1
    return obj


def stored(kube, namespace: str, name: str) -> dict[str, Any]:
    return objects(kube).get_namespaced_custom_object(isvc.GROUP, isvc.VERSION, namespace, isvc.PLURAL, name)


def controller_status(fixture: str, namespace: str, generation: int) -> dict[str, Any]:
    """A status KServe's controller reports (tests/fixtures/recorded/kserve/<fixture>), for a service in
    `namespace` whose controller has observed `generation`."""
    status = load_fixture(f"kserve/{fixture}")["status"]
    status = _replace(status, ".homefeed.svc.", f".{namespace}.svc.")
    return {**status, "observedGeneration": generation}


def _replace(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return value.replace(old, new) if isinstance(value, str) else value


def write_status(kube, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """Write `status` as KServe's controller does: through the status subresource (its merge patch replaces the
    conditions list whole). Asserts the server kept all of it (a field upstream's status schema lacks is pruned)
    and that the spec's generation did not move."""
    before = stored(kube, namespace, name)
    obj = objects(kube).patch_namespaced_custom_object_status(
        isvc.GROUP, isvc.VERSION, namespace, isvc.PLURAL, name, {"status": status}
    )
    assert obj["status"] == status, f"the server changed the status written: {obj['status']}"
    assert obj["metadata"]["generation"] == before["metadata"]["generation"]
    return obj


class PlayedKServe:
    """KServe's controller between two polls, on a fake clock: each `sleep` writes the next status of every service
    that still has one in its script; a service whose script is spent keeps its last status."""

    def __init__(self, kube: client.ApiClient, namespace: str, scripts: Mapping[str, list[dict[str, Any]]]) -> None:
        self.kube, self.namespace = kube, namespace
        self.scripts = {name: list(statuses) for name, statuses in scripts.items()}
        self.time = FakeTime()
        self.clock = self.time.clock

    @property
    def sleeps(self) -> list[float]:
        return self.time.sleeps

    def sleep(self, seconds: float) -> None:
        self.time.sleep(seconds)
        for name, script in self.scripts.items():
            if script:
                write_status(self.kube, self.namespace, name, script.pop(0))


def test_patch_changes_storage_uri_only_and_bumps_the_generation(kube, dev_isvcs, namespace):
    create(kube, dev_isvcs, namespace, "ranking")
    # An operator scales the service meanwhile: the pipeline's patch must leave that alone.
    objects(kube).patch_namespaced_custom_object(
        isvc.GROUP, isvc.VERSION, namespace, isvc.PLURAL, "ranking", {"spec": {"predictor": {"minReplicas": 2}}}
    )
    before = stored(kube, namespace, "ranking")
    assert before["metadata"]["generation"] == 2

    generation = isvc.set_storage_uri(kube, "ranking", namespace, RANKING_URI)

    after = stored(kube, namespace, "ranking")
    assert generation == after["metadata"]["generation"] == 3
    assert after["spec"]["predictor"]["model"]["storageUri"] == RANKING_URI
    expected = copy.deepcopy(before["spec"])
    expected["predictor"]["model"]["storageUri"] = RANKING_URI
    assert after["spec"] == expected  # minReplicas 2 kept, nothing else touched
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]


def test_patch_of_a_fresh_service_moves_generation_1_to_2(kube, dev_isvcs, namespace):
    created = create(kube, dev_isvcs, namespace, "retrieval")
    assert isvc.set_storage_uri(kube, "retrieval", namespace, RETRIEVAL_URI) == 2
    after = stored(kube, namespace, "retrieval")
    expected = copy.deepcopy(created["spec"])
    expected["predictor"]["model"]["storageUri"] = RETRIEVAL_URI
    assert after["spec"] == expected


def test_the_same_uri_again_is_no_new_generation(kube, dev_isvcs, namespace):
    # The server bumps the generation only when the spec changes: re-rolling the deployed version waits on nothing.
    create(kube, dev_isvcs, namespace, "ranking")
    assert isvc.set_storage_uri(kube, "ranking", namespace, RANKING_URI) == 2
    assert isvc.set_storage_uri(kube, "ranking", namespace, RANKING_URI) == 2


def test_missing_service_says_to_apply_the_manifests(kube, namespace):
    with pytest.raises(RuntimeError, match=f"{namespace}/ranking does not exist: apply the serving manifests") as info:
        isvc.set_storage_uri(kube, "ranking", namespace, RANKING_URI)
    assert 'inferenceservices.serving.kserve.io "ranking" not found' in str(info.value)


def test_stale_ready_is_not_accepted_the_new_generation_is(kube, dev_isvcs, namespace):
    create(kube, dev_isvcs, namespace, "ranking")
    # Generation 1 is serving: KServe reports it Ready.
    write_status(kube, namespace, "ranking", controller_status("ranking_ready", namespace, 1))
    generation = isvc.set_storage_uri(kube, "ranking", namespace, RANKING_URI)
    assert generation == 2
    # Until KServe has seen generation 2 its status still says Ready=True, at observedGeneration 1; then it rolls
    # the new revision out (Ready=False) and reports it ready.
    rolling = controller_status("ranking_rolling", namespace, 2)
    ready = controller_status("ranking_ready", namespace, 2)
    kserve = PlayedKServe(kube, namespace, {"ranking": [rolling, ready]})

    status = isvc.wait_ready(
        kube, "ranking", namespace, generation, timeout_s=60, poll_s=5, sleep=kserve.sleep, clock=kserve.clock
    )

    assert status == ready
    assert kserve.sleeps == [5, 5]  # the stale Ready=True and the rolling revision were both waited through


def test_timeout_quotes_the_conditions(kube, dev_isvcs, namespace):
    create(kube, dev_isvcs, namespace, "ranking")
    generation = isvc.set_storage_uri(kube, "ranking", namespace, RANKING_URI)
    write_status(kube, namespace, "ranking", controller_status("ranking_rolling", namespace, generation))
    # Ready=False keeps the wait going (KServe reports it while rolling); only the deadline ends it.
    kserve = PlayedKServe(kube, namespace, {"ranking": [controller_status("ranking_failing", namespace, generation)]})

    with pytest.raises(TimeoutError) as info:
        isvc.wait_ready(
            kube, "ranking", namespace, generation, timeout_s=30, poll_s=10, sleep=kserve.sleep, clock=kserve.clock
        )

    assert kserve.sleeps == [10, 10, 10]
    message = str(info.value)
    assert f"{namespace}/ranking not ready at generation 2 within 30 s (observedGeneration=2)" in message
    assert "Ready=False (ProgressDeadlineExceeded: ReplicaSet" in message
    assert "PredictorReady=False" in message and "IngressReady=True" in message


def test_rollout_patches_every_service_then_waits_for_each(kube, dev_isvcs, namespace):
    for name in ("ranking", "retrieval"):
        create(kube, dev_isvcs, namespace, name)
        write_status(kube, namespace, name, controller_status(f"{name}_ready", namespace, 1))
    # After the patches: ranking's first read still shows generation 1 ready; by the next, both are ready at 2.
    kserve = PlayedKServe(
        kube,
        namespace,
        {
            "ranking": [controller_status("ranking_ready", namespace, 2)],
            "retrieval": [controller_status("retrieval_ready", namespace, 2)],
        },
    )

    result = isvc.rollout(
        kube,
        namespace,
        {"ranking": RANKING_URI, "retrieval": RETRIEVAL_URI},
        timeout_s=120,
        poll_s=5,
        sleep=kserve.sleep,
        clock=kserve.clock,
    )

    for name, uri in (("ranking", RANKING_URI), ("retrieval", RETRIEVAL_URI)):
        obj = stored(kube, namespace, name)
        assert obj["spec"]["predictor"]["model"]["storageUri"] == uri
        assert result[name]["status"] == obj["status"]
    assert {name: (r["generation"], r["url"]) for name, r in result.items()} == {
        "ranking": (2, f"http://ranking.{namespace}.svc.cluster.local"),
        "retrieval": (2, f"http://retrieval.{namespace}.svc.cluster.local"),
    }
    assert kserve.sleeps == [5]


def test_rollout_stops_at_the_first_failed_patch(kube, dev_isvcs, namespace):
    create(kube, dev_isvcs, namespace, "ranking")  # retrieval was never applied
    t = FakeTime()
    with pytest.raises(RuntimeError, match=f"{namespace}/retrieval does not exist"):
        isvc.rollout(
            kube, namespace, {"ranking": RANKING_URI, "retrieval": RETRIEVAL_URI}, sleep=t.sleep, clock=t.clock
        )
    assert stored(kube, namespace, "ranking")["spec"]["predictor"]["model"]["storageUri"] == RANKING_URI
    assert t.sleeps == []  # no wait began
    with pytest.raises(ApiException) as info:
        stored(kube, namespace, "retrieval")
    assert info.value.status == 404
