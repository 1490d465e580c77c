"""Every custom resource our manifests declare, and the RayJob body the code builds, applied to a real API server.

The server is `kube_api` (tests/integration/conftest.py): etcd and apiextensions-apiserver on loopback, serving the
upstream CRDs vendored in tests/fixtures/crds, unmodified. So what it answers is what a cluster's API server answers
for these objects: it validates them against upstream's structural schema (422), silently prunes any field that
schema does not declare, fills in upstream's defaults, refuses a stale resourceVersion (409), merges server-side
applies by field manager and tells watchers. It runs no controllers: nothing here needs a status.

For each object both overlays render (`kubectl kustomize manifests/overlays/{dev,prod}`) whose API group the server
serves, and for the RayJob template in manifests/templates, the test walks the life an operator's `kubectl` gives it:
create (every field of our spec comes back: a field missing from the stored object is one upstream does not know, which
a cluster would drop without a word), a server-side apply of the same object with one more label (field manager
"homefeed"), delete, with a watch opened before the create seeing ADDED, MODIFIED and DELETED. That apply must not
conflict: it did for the RayCluster and the RayJob until their worker groups spelt out KubeRay's defaults (the test
of that is below).

Then what the server refuses or changes on its own: a wrongly typed field (422, naming it), a misspelt one (pruned,
silently), an update from a stale read (409), an apply over another manager's value (409 unless forced), and the
RayJob body components.cluster.rayjob builds (stored whole, with upstream's defaults added).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from vendored_crds import VendoredCRD, vendored_crds

from components.cluster.kube import api_message
from components.cluster.local_cluster import render
from components.cluster.rayjob import RayJobSpec, rayjob_manifest

pytestmark = pytest.mark.integration

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
TARGETS = ("overlays/dev", "overlays/prod", "templates")
# ("group/version", kind) -> CRD; several kinds share a group and version (RayJob and RayCluster in ray.io/v1)
CRDS: dict[tuple[str, str], VendoredCRD] = {(crd.api_version, crd.kind): crd for crd in vendored_crds()}
SERVED_GROUPS = {crd.group for crd in CRDS.values()}
MANAGER = "homefeed"  # the field manager our applies use
APPLIED_LABEL = ("homefeed.io/applied", "again")  # the label the second apply adds
WATCH_TIMEOUT_S = 60  # the server closes a watch after this; an event that has not come by then never will


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """target -> its objects: each overlay as `kubectl kustomize` renders it, the templates as written."""
    try:
        out = {t: render(MANIFESTS / t) for t in TARGETS if t.startswith("overlays/")}
    except FileNotFoundError as exc:  # no kubectl
        pytest.skip(str(exc))
    out["templates"] = [
        doc for path in sorted((MANIFESTS / "templates").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
    ]
    return out


def served(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects of a group the server serves (the custom resources); one of such a group in a version it does
    not serve is an error, as the vendored CRD is the version we claim to target."""
    ours = [o for o in objects if o.get("apiVersion", "").split("/")[0] in SERVED_GROUPS]
    unserved = sorted({f"{o['kind']} {o['apiVersion']}" for o in ours if crd_of(o) is None})
    assert not unserved, f"manifests use kinds the vendored CRDs do not serve: {unserved} (served: {sorted(CRDS)})"
    return ours


def crd_of(obj: dict[str, Any]) -> VendoredCRD | None:
    return CRDS.get((obj.get("apiVersion", ""), obj.get("kind", "")))


def missing(sent: Any, stored: Any, path: str) -> list[str]:
    """Where `stored` lacks a field of `sent` or holds another value: what the server pruned or changed. `stored`
    may have more (the server's defaults)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [f"{path} (stored {stored!r})"]
        return [
            p
            for key, value in sent.items()
            for p in ([f"{path}.{key}"] if key not in stored else missing(value, stored[key], f"{path}.{key}"))
        ]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [f"{path} (sent {len(sent)} items, stored {stored!r})"]
        return [p for i, (a, b) in enumerate(zip(sent, stored, strict=True)) for p in missing(a, b, f"{path}[{i}]")]
    return [] if sent == stored and type(sent) is type(stored) else [f"{path} (sent {sent!r}, stored {stored!r})"]


def added(stored: Any, sent: Any, path: str) -> dict[str, Any]:
    """path -> value of what `stored` has and `sent` had not: the defaults the server filled in."""
    if isinstance(stored, dict) and isinstance(sent, dict):
        out: dict[str, Any] = {}
        for key, value in stored.items():
            out.update({f"{path}.{key}": value} if key not in sent else added(value, sent[key], f"{path}.{key}"))
        return out
    if isinstance(stored, list) and isinstance(sent, list) and len(stored) == len(sent):
        return {
            p: v
            for i, (a, b) in enumerate(zip(stored, sent, strict=True))
            for p, v in added(a, b, f"{path}[{i}]").items()
        }
    return {}


def in_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    body = copy.deepcopy(obj)
    body["metadata"]["namespace"] = namespace
    return body


def server_side_apply(
    api_client: client.ApiClient, body: dict[str, Any], manager: str = MANAGER, force: bool = False
) -> dict[str, Any]:
    """PATCH `body` as an apply configuration (application/apply-patch+yaml, `kubectl apply --server-side`).
    CustomObjectsApi (kubernetes 30.1.0) only sends merge patches, hence the call by hand; JSON is YAML."""
    crd = crd_of(body)
    meta = body["metadata"]
    path = f"/apis/{crd.group}/{crd.version}/namespaces/{meta['namespace']}/{crd.plural}/{meta['name']}"
    query = [("fieldManager", manager)] + ([("force", "true")] if force else [])
    return api_client.call_api(
        path,
        "PATCH",
        query_params=query,
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body=body,
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )


class Watcher:
    """A watch on one plural in one namespace from `resource_version`, read one event at a time: `next_event`
    blocks until the server sends one (events after `resource_version` are sent whenever the watch connects)."""

    def __init__(self, api_client: client.ApiClient, crd: VendoredCRD, namespace: str, resource_version: str) -> None:
        self.watch = watch.Watch()
        self.stream = self.watch.stream(
            client.CustomObjectsApi(api_client).list_namespaced_custom_object,
            crd.group,
            crd.version,
            namespace,
            crd.plural,
            resource_version=resource_version,
            timeout_seconds=WATCH_TIMEOUT_S,
        )

    def next_event(self, name: str) -> tuple[str, dict[str, Any]]:
        """(type, object) of the next event about `name`; AssertionError when the watch ends without one."""
        for event in self.stream:
            if event["object"]["metadata"]["name"] == name:
                return event["type"], event["object"]
        raise AssertionError(f"the watch ended ({WATCH_TIMEOUT_S} s) without another event for {name}")

    def close(self) -> None:
        self.watch.stop()
        self.stream.close()


def conflicts(exc: ApiException) -> list[str]:
    """The fields a 409 of a server-side apply names (FieldManagerConflict causes); [] for any other error."""
    if exc.status != 409:
        return []
    causes = (json.loads(exc.body).get("details") or {}).get("causes") or []
    return [c["field"] for c in causes if c.get("reason") == "FieldManagerConflict"]


def lifecycle(api_client: client.ApiClient, obj: dict[str, Any], namespace: str) -> tuple[list[str], list[str]]:
    """Create, apply again with one more label, delete `obj` in `namespace`, watching. Returns the problems found
    and the fields the apply conflicted on (it is then forced, as `kubectl apply --server-side --force-conflicts`)."""
    crd = crd_of(obj)
    api = client.CustomObjectsApi(api_client)
    body = in_namespace(obj, namespace)
    name = body["metadata"]["name"]
    what = f"{obj['kind']}/{name}"
    problems: list[str] = []
    conflicted: list[str] = []
    start = api.list_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural)["metadata"][
        "resourceVersion"
    ]
    watcher = Watcher(api_client, crd, namespace, start)
    try:
        try:
            created = api.create_namespaced_custom_object(
                crd.group, crd.version, namespace, crd.plural, body, field_manager=MANAGER
            )
        except ApiException as exc:
            return [f"{what}: refused on create ({exc.status}): {api_message(exc)}"], []
        problems += [
            f"{what}: pruned or changed on create: {p}" for p in missing(body["spec"], created["spec"], "spec")
        ]
        if created["metadata"].get("generation") != 1:
            problems.append(f"{what}: generation {created['metadata'].get('generation')} after create, not 1")
        kind, seen = watcher.next_event(name)
        if (kind, seen["metadata"]["resourceVersion"]) != ("ADDED", created["metadata"]["resourceVersion"]):
            problems.append(f"{what}: the watch saw {kind} at {seen['metadata']['resourceVersion']} first, not ADDED")

        labels = {**body["metadata"].get("labels", {}), APPLIED_LABEL[0]: APPLIED_LABEL[1]}
        again = {**body, "metadata": {**body["metadata"], "labels": labels}}
        try:
            applied = server_side_apply(api_client, again)
        except ApiException as exc:
            conflicted = conflicts(exc)
            if not conflicted:
                return [*problems, f"{what}: apply refused ({exc.status}): {api_message(exc)}"], []
            applied = server_side_apply(api_client, again, force=True)
        if applied["metadata"].get("labels") != labels:
            problems.append(f"{what}: labels after the apply are {applied['metadata'].get('labels')}, not {labels}")
        if applied["metadata"]["generation"] != 1:  # a label is metadata, and the spec is the same: no new generation
            problems.append(f"{what}: the apply moved the generation to {applied['metadata']['generation']}")
        problems += [f"{what}: pruned or changed on apply: {p}" for p in missing(body["spec"], applied["spec"], "spec")]
        managers = {(m["manager"], m["operation"]) for m in applied["metadata"].get("managedFields", [])}
        if (MANAGER, "Apply") not in managers:
            problems.append(f"{what}: no field manager {MANAGER!r} (Apply) after the apply: {sorted(managers)}")
        kind, seen = watcher.next_event(name)
        if kind != "MODIFIED" or seen["metadata"].get("labels") != labels:
            problems.append(
                f"{what}: the watch saw {kind} with labels {seen['metadata'].get('labels')} after the apply"
            )

        api.delete_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural, name)
        kind, _ = watcher.next_event(name)
        if kind != "DELETED":
            problems.append(f"{what}: the watch saw {kind} after the delete, not DELETED")
        with pytest.raises(ApiException) as gone:
            api.get_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural, name)
        if gone.value.status != 404:
            problems.append(f"{what}: a GET after the delete answered {gone.value.status}, not 404")
    finally:
        watcher.close()
    return problems, conflicted


@pytest.mark.parametrize("target", TARGETS)
def test_every_custom_resource_is_stored_as_written_applied_watched_and_deleted(rendered, kube, namespace, target):
    objects = served(rendered[target])
    assert objects, f"{target} renders no custom resource the server serves"
    problems, conflicted = [], {}
    for obj in objects:
        found, fields = lifecycle(kube, obj, namespace)
        problems += found
        if fields:
            conflicted[obj["kind"]] = fields
    assert problems == [], "\n".join(problems)
    assert conflicted == {}  # a re-apply of the unchanged manifest conflicts with nothing


def test_worker_groups_without_kuberays_defaults_would_conflict_on_a_re_apply(rendered, kube, namespace):
    # Why the manifests and rayjob_manifest spell out numOfHosts and priority: KubeRay's schema gives
    # `workerGroupSpecs` no list type, so the list is one atomic field, and the server fills those two defaults into
    # its items. Without them, an apply of the very manifest differs from the stored list and conflicts with whichever
    # manager wrote it before.
    ray = in_namespace(next(o for o in served(rendered["overlays/dev"]) if o["kind"] == "RayCluster"), namespace)
    assert all((g["numOfHosts"], g["priority"]) == (1, 0) for g in ray["spec"]["workerGroupSpecs"])
    server_side_apply(kube, ray, manager="kubectl")
    server_side_apply(kube, ray)  # another manager, the same values: shared ownership, no conflict

    bare = copy.deepcopy(ray)
    bare["metadata"]["name"] = "defaults-left-out"
    for group in bare["spec"]["workerGroupSpecs"]:
        del group["numOfHosts"], group["priority"]
    server_side_apply(kube, bare, manager="kubectl")
    with pytest.raises(ApiException) as info:
        server_side_apply(kube, bare)
    assert conflicts(info.value) == [".spec.workerGroupSpecs"]


def test_the_overlays_declare_a_resource_of_every_served_kind_but_rayjob(rendered):
    # The lifecycle test above is only as good as what it walks: every vendored CRD but RayJob (which the pipelines
    # create themselves: the templates and the last test here) has an object in both overlays.
    for target in ("overlays/dev", "overlays/prod"):
        kinds = {o["kind"] for o in served(rendered[target])}
        assert kinds == {crd.kind for crd in CRDS.values()} - {"RayJob"}, target


def ranking_isvc(rendered, namespace: str) -> dict[str, Any]:
    isvcs = [o for o in rendered["overlays/dev"] if o["kind"] == "InferenceService"]
    return in_namespace(next(o for o in isvcs if o["metadata"]["name"] == "ranking"), namespace)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (("spec", "predictor", "minReplicas"), "one", "integer"),
        (("spec", "predictor", "model", "storageUri"), 7, "string"),
    ],
)
def test_a_wrongly_typed_field_is_refused_naming_it(rendered, kube, namespace, field, value, expected):
    body = ranking_isvc(rendered, namespace)
    parent = body
    for key in field[:-1]:
        parent = parent[key]
    parent[field[-1]] = value
    api = client.CustomObjectsApi(kube)
    crd = crd_of(body)
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural, body)
    assert info.value.status == 422
    message = api_message(info.value)
    assert ".".join(field) in message and f"must be of type {expected}" in message, message
    # refused as a whole: nothing was stored
    assert api.list_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural)["items"] == []


def test_a_misspelt_field_is_pruned_without_a_word(rendered, kube, namespace):
    # Why the lifecycle test compares what comes back: the server accepts an unknown field and drops it.
    body = ranking_isvc(rendered, namespace)
    body["spec"]["predictor"]["model"]["storageURI"] = "s3://homefeed-models/ranking/v7"
    crd = crd_of(body)
    created = client.CustomObjectsApi(kube).create_namespaced_custom_object(
        crd.group, crd.version, namespace, crd.plural, body
    )
    assert missing(body["spec"], created["spec"], "spec") == ["spec.predictor.model.storageURI"]


def test_an_update_from_a_stale_read_gets_409(rendered, kube, namespace):
    body = ranking_isvc(rendered, namespace)
    crd = crd_of(body)
    api = client.CustomObjectsApi(kube)
    api.create_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural, body)
    read = api.get_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural, "ranking")
    # someone else changes it meanwhile
    api.patch_namespaced_custom_object(
        crd.group, crd.version, namespace, crd.plural, "ranking", {"spec": {"predictor": {"minReplicas": 2}}}
    )
    read["spec"]["predictor"]["maxReplicas"] = 3
    with pytest.raises(ApiException) as info:
        api.replace_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural, "ranking", read)
    assert info.value.status == 409
    assert "the object has been modified" in api_message(info.value)
    now = api.get_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural, "ranking")
    assert (now["spec"]["predictor"]["minReplicas"], now["spec"]["predictor"]["maxReplicas"]) == (2, 1)
    assert now["metadata"]["generation"] == 2


def test_an_apply_that_changes_another_managers_field_conflicts_unless_forced(rendered, kube, namespace):
    body = ranking_isvc(rendered, namespace)
    server_side_apply(kube, body, manager="operator")
    changed = copy.deepcopy(body)
    changed["spec"]["predictor"]["maxReplicas"] = 3
    with pytest.raises(ApiException) as info:
        server_side_apply(kube, changed)
    assert info.value.status == 409
    assert 'conflict with "operator"' in api_message(info.value) and ".spec.predictor.maxReplicas" in api_message(
        info.value
    )
    forced = server_side_apply(kube, changed, force=True)
    assert forced["spec"]["predictor"]["maxReplicas"] == 3 and forced["metadata"]["generation"] == 2


def test_the_rayjob_the_code_builds_is_stored_whole_and_defaulted(kube, namespace):
    spec = RayJobSpec(
        name="train-retrieval-3c1f0a9e2b",
        namespace=namespace,
        image="ghcr.io/homefeed/trainer:0.1.0",
        entrypoint="python -m components.train.retrieval --data /workspace/data --out /workspace/out/retrieval",
        runtime_env={"env_vars": {"HOMEFEED_SEED": "3"}},
        workers=2,
        worker_cpu="4",
        worker_memory="16Gi",
        worker_gpus=1,
        pvc_name="homefeed-workspace",
        service_account="homefeed-ray",
        labels={"app.kubernetes.io/part-of": "homefeed", "homefeed.io/step": "train-retrieval"},
    )
    body = rayjob_manifest(spec)
    crd = crd_of(body)
    created = client.CustomObjectsApi(kube).create_namespaced_custom_object(
        crd.group, crd.version, namespace, crd.plural, body
    )
    assert missing(body["spec"], created["spec"], "spec") == []
    # what upstream's schema defaults and the body leaves out, and only that, was filled in (the worker group's
    # numOfHosts and priority are written out: see the re-apply test above)
    assert added(created["spec"], body["spec"], "spec") == {"spec.backoffLimit": 0}
