"""components.cluster.inference_service against the real kubernetes client and a replayed Kubernetes API.

What matters on the wire is the PATCH: a JSON merge patch naming only storageUri. What matters in the wait is the
generation: a Ready=True left over from the previous revision must not end it.
"""

from __future__ import annotations

import pytest
from recorded_api import FakeTime, RecordedAPI, load_fixture, replies, reply, vendored_crd_validator

from components.cluster import inference_service as isvc
from components.cluster.kube import api_client

pytestmark = pytest.mark.integration

BASE = "/apis/serving.kserve.io/v1beta1/namespaces/homefeed/inferenceservices"
RANKING, RETRIEVAL = f"{BASE}/ranking", f"{BASE}/retrieval"
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


def test_patch_is_a_merge_patch_of_storage_uri_only():
    with RecordedAPI([reply("PATCH", RANKING, fixture="kserve/ranking_patched")]) as api:
        generation = isvc.set_storage_uri(api_client(api.url), "ranking", "homefeed", RANKING_URI)
    api.assert_all_used()
    assert generation == 8
    (patch,) = api.requests
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {"spec": {"predictor": {"model": {"storageUri": RANKING_URI}}}}


def test_missing_service_says_to_apply_the_manifests():
    with (
        RecordedAPI([reply("PATCH", RANKING, status=404, fixture="kserve/status_not_found")]) as api,
        pytest.raises(RuntimeError, match="homefeed/ranking does not exist: apply the serving manifests") as info,
    ):
        isvc.set_storage_uri(api_client(api.url), "ranking", "homefeed", RANKING_URI)
    api.assert_all_used()
    assert 'inferenceservices.serving.kserve.io "ranking" not found' in str(info.value)


def test_forbidden_names_the_missing_permission():
    with (
        RecordedAPI([reply("PATCH", RANKING, status=403, fixture="kserve/status_forbidden")]) as api,
        pytest.raises(RuntimeError, match="needs the 'patch' verb on inferenceservices.serving.kserve.io") as info,
    ):
        isvc.set_storage_uri(api_client(api.url), "ranking", "homefeed", RANKING_URI)
    api.assert_all_used()
    assert "system:serviceaccount:homefeed:pipeline-runner" in str(info.value)


def test_ready_is_judged_at_the_patched_generation():
    stale = load_fixture("kserve/ranking_stale_ready")["status"]
    assert stale["observedGeneration"] == 7 and isvc.is_ready(stale, 7)
    assert not isvc.is_ready(stale, 8)
    assert not isvc.is_ready(load_fixture("kserve/ranking_rolling")["status"], 8)
    assert isvc.is_ready(load_fixture("kserve/ranking_ready")["status"], 8)


def test_stale_ready_is_not_accepted_the_new_generation_is():
    t = FakeTime()
    polls = ["kserve/ranking_stale_ready", "kserve/ranking_rolling", "kserve/ranking_ready"]
    with RecordedAPI([replies("GET", RANKING, polls)]) as api:
        status = isvc.wait_ready(
            api_client(api.url), "ranking", "homefeed", 8, timeout_s=60, poll_s=5, sleep=t.sleep, clock=t.clock
        )
    api.assert_all_used()
    assert status == load_fixture("kserve/ranking_ready")["status"]
    assert t.sleeps == [5, 5]


def test_timeout_quotes_the_conditions():
    t = FakeTime()
    # Ready=False keeps the wait going (KServe reports it while rolling); only the deadline ends it.
    with (
        RecordedAPI([replies("GET", RANKING, ["kserve/ranking_rolling"] + ["kserve/ranking_failing"] * 3)]) as api,
        pytest.raises(TimeoutError) as info,
    ):
        isvc.wait_ready(
            api_client(api.url), "ranking", "homefeed", 8, timeout_s=30, poll_s=10, sleep=t.sleep, clock=t.clock
        )
    api.assert_all_used()
    message = str(info.value)
    assert "homefeed/ranking not ready at generation 8 within 30 s" in message
    assert "Ready=False (ProgressDeadlineExceeded: ReplicaSet" in message
    assert "PredictorReady=False" in message and "IngressReady=True" in message


def test_rollout_patches_every_service_then_waits_for_each():
    t = FakeTime()
    script = [
        reply("PATCH", RANKING, fixture="kserve/ranking_patched"),
        reply("PATCH", RETRIEVAL, fixture="kserve/retrieval_patched"),
        replies("GET", RANKING, ["kserve/ranking_stale_ready", "kserve/ranking_ready"]),
        reply("GET", RETRIEVAL, fixture="kserve/retrieval_ready"),
    ]
    with RecordedAPI(script) as api:
        result = isvc.rollout(
            api_client(api.url),
            "homefeed",
            {"ranking": RANKING_URI, "retrieval": RETRIEVAL_URI},
            timeout_s=120,
            poll_s=5,
            sleep=t.sleep,
            clock=t.clock,
        )
    api.assert_all_used()
    assert [p.body["spec"]["predictor"]["model"]["storageUri"] for p in api.sent("PATCH")] == [
        RANKING_URI,
        RETRIEVAL_URI,
    ]
    assert {p.content_type for p in api.sent("PATCH")} == {"application/merge-patch+json"}
    assert {name: (r["generation"], r["url"]) for name, r in result.items()} == {
        "ranking": (8, "http://ranking.homefeed.svc.cluster.local"),
        "retrieval": (5, "http://retrieval.homefeed.svc.cluster.local"),
    }
    assert result["retrieval"]["status"] == load_fixture("kserve/retrieval_ready")["status"]


def test_rollout_stops_at_the_first_failed_patch():
    script = [
        reply("PATCH", RANKING, fixture="kserve/ranking_patched"),
        reply("PATCH", RETRIEVAL, status=404, body={"kind": "Status", "code": 404, "message": "not found"}),
    ]
    with RecordedAPI(script) as api, pytest.raises(RuntimeError, match="homefeed/retrieval does not exist"):
        isvc.rollout(api_client(api.url), "homefeed", {"ranking": RANKING_URI, "retrieval": RETRIEVAL_URI})
    api.assert_all_used()
    assert api.sent("GET") == []
