"""The one transformation from rendered manifests to local pods (components/cluster/pods.py): what KServe would make
of an InferenceService and its ServingRuntime, and the rules that replace what needs a cluster."""

from __future__ import annotations

import pytest

from components.cluster.pods import MODEL_MOUNT, find, local_pod, predictor_pod

pytestmark = pytest.mark.unit

RUNTIME = {
    "kind": "ServingRuntime",
    "metadata": {"name": "rt"},
    "spec": {
        "containers": [{
            "name": "kserve-container", "image": "img", "command": ["python", "-m", "serving"], "args": ["retrieval"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "envFrom": [{"secretRef": {"name": "s3"}}],
            "env": [{"name": "HOME", "value": "/tmp"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "milvus", "key": "token", "optional": True}}}],
            "resources": {"limits": {"cpu": "2"}},
            "securityContext": {"readOnlyRootFilesystem": True},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "features", "mountPath": "/etc/f"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "features", "configMap": {"name": "fs"}}],
    },
}  # fmt: skip
ISVC = {
    "kind": "InferenceService",
    "metadata": {"name": "retrieval"},
    "spec": {"predictor": {
        "labels": {"app": "r"}, "securityContext": {"runAsUser": 10001},
        "model": {"runtime": "rt", "resources": {"limits": {"cpu": "1"}},
                  "securityContext": {"readOnlyRootFilesystem": True, "runAsNonRoot": True}},
    }},
}  # fmt: skip


def test_a_predictor_pod_is_the_runtimes_container_with_the_models_settings_and_the_bundle(tmp_path):
    pod = predictor_pod(ISVC, RUNTIME, tmp_path / "bundle", {"features": tmp_path / "f"}, {8080: 18080},
                        {"s3": {"AWS_ACCESS_KEY_ID": "k"}}, tmp_path)  # fmt: skip
    (c,) = pod["spec"]["containers"]
    assert pod["metadata"]["name"] == "retrieval-predictor" and pod["metadata"]["labels"]["app"] == "r"
    assert c["resources"] == {"limits": {"cpu": "1"}} and c["securityContext"]["runAsNonRoot"]
    assert pod["spec"]["securityContext"] == {"runAsUser": 10001} and c["args"] == ["retrieval"]
    assert {"name": "kserve-provision-location", "mountPath": MODEL_MOUNT} in c["volumeMounts"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["kserve-provision-location"]["hostPath"]["path"] == str((tmp_path / "bundle").resolve())
    assert volumes["features"] == {"name": "features", "hostPath": {"path": str(tmp_path / "f"), "type": "Directory"}}
    scratch = tmp_path / "retrieval-predictor" / "tmp"
    assert volumes["tmp"]["hostPath"]["path"] == str(scratch) and scratch.stat().st_mode & 0o1777 == 0o1777
    assert c["ports"][0]["hostPort"] == 18080
    # the given Secret's keys become env; the optional one not given is left out
    assert c["env"] == [{"name": "HOME", "value": "/tmp"}, {"name": "AWS_ACCESS_KEY_ID", "value": "k"}]
    assert "envFrom" not in c
    assert RUNTIME["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "2"}}  # the inputs are not changed


def test_a_required_secret_that_is_not_given_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs Secret 's3'"):
        predictor_pod(ISVC, RUNTIME, tmp_path, scratch=tmp_path)


def test_an_inference_service_on_another_runtime_is_refused(tmp_path):
    other = {**RUNTIME, "metadata": {"name": "other"}}
    with pytest.raises(ValueError, match="names runtime 'rt'"):
        predictor_pod(ISVC, other, tmp_path, secrets={"s3": {}}, scratch=tmp_path)


def test_an_empty_dir_needs_a_scratch_folder_and_find_names_what_is_missing():
    pod = {"metadata": {"name": "p"}, "spec": {"volumes": [{"name": "tmp", "emptyDir": {}}], "containers": []}}
    with pytest.raises(ValueError, match="needs a scratch folder"):
        local_pod(pod, {}, {}, {})
    with pytest.raises(KeyError, match="no Pod 'x'"):
        find([pod | {"kind": "Pod"}], "Pod", "x")
