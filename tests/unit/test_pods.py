"""The one transformation from rendered manifests to local pods (components/cluster/pods.py): what KServe would make
of an InferenceService and its ServingRuntime, and the rules that replace what needs a cluster."""

from __future__ import annotations

import pytest

from components.cluster.podman import _unpublished
from components.cluster.pods import (
    MODEL_MOUNT,
    Service,
    find,
    local_pod,
    milvus_pod,
    predictor_pod,
    with_services,
    workload_pod,
)

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
        predictor_pod(ISVC, RUNTIME, tmp_path, {"features": tmp_path}, scratch=tmp_path)


def test_a_config_map_or_claim_without_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="volume 'features' needs a folder"):
        predictor_pod(ISVC, RUNTIME, tmp_path, secrets={"s3": {}}, scratch=tmp_path)


def test_an_inference_service_on_another_runtime_is_refused(tmp_path):
    other = {**RUNTIME, "metadata": {"name": "other"}}
    with pytest.raises(ValueError, match="names runtime 'rt'"):
        predictor_pod(ISVC, other, tmp_path, {"features": tmp_path}, secrets={"s3": {}}, scratch=tmp_path)


def test_a_claim_taken_read_only_is_mounted_read_only_in_every_container(tmp_path):
    mounts = [{"name": "ws", "mountPath": "/workspace"}, {"name": "rw", "mountPath": "/data"}]
    pod = {"metadata": {"name": "p"}, "spec": {
        "volumes": [{"name": "ws", "persistentVolumeClaim": {"claimName": "c", "readOnly": True}},
                    {"name": "rw", "persistentVolumeClaim": {"claimName": "d"}}],
        "containers": [{"name": "a", "volumeMounts": mounts}, {"name": "b", "volumeMounts": mounts[:1]}],
    }}  # fmt: skip
    local = local_pod(pod, {"ws": tmp_path / "c", "rw": tmp_path / "d"}, {}, {})
    assert local["spec"]["volumes"][0] == {"name": "ws", "hostPath": {"path": str(tmp_path / "c"), "type": "Directory"}}
    a, b = local["spec"]["containers"]
    assert a["volumeMounts"] == [{"name": "ws", "mountPath": "/workspace", "readOnly": True},
                                 {"name": "rw", "mountPath": "/data"}]  # fmt: skip
    assert b["volumeMounts"] == [{"name": "ws", "mountPath": "/workspace", "readOnly": True}]
    assert "readOnly" not in pod["spec"]["containers"][0]["volumeMounts"][0]  # the input is not changed


def test_an_empty_dir_needs_a_scratch_folder_and_find_names_what_is_missing():
    pod = {"metadata": {"name": "p"}, "spec": {"volumes": [{"name": "tmp", "emptyDir": {}}], "containers": []}}
    with pytest.raises(ValueError, match="needs a scratch folder"):
        local_pod(pod, {}, {}, {})
    with pytest.raises(KeyError, match="no Pod 'x'"):
        find([pod | {"kind": "Pod"}], "Pod", "x")


STATEFULSET = {
    "kind": "StatefulSet",
    "metadata": {"name": "redis"},
    "spec": {
        "template": {"metadata": {"labels": {"app": "redis"}},
                     "spec": {"containers": [{"name": "redis", "image": "img"}], "securityContext": {"fsGroup": 7}}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
    },
}  # fmt: skip
MILVUS = {
    "kind": "Milvus",
    "metadata": {"name": "m"},
    "spec": {
        "mode": "standalone",
        "components": {"env": [{"name": "E", "value": "1"}], "podLabels": {"tier": "index"},
                       "resources": {"limits": {"memory": "4Gi"}}, "securityContext": {"runAsUser": 1000}},
        "config": {"common": {"security": {"authorizationEnabled": True}}},
    },
}  # fmt: skip


def test_a_statefulset_is_its_first_pod_with_its_claim_as_a_volume():
    pod = workload_pod(STATEFULSET)
    assert pod["metadata"] == {"name": "redis-0", "labels": {"app": "redis"}}
    assert pod["spec"]["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "data-redis-0"}}]
    assert pod["spec"]["securityContext"] == {"fsGroup": 7}
    with pytest.raises(ValueError, match="only Deployments and StatefulSets"):
        workload_pod({**STATEFULSET, "kind": "DaemonSet"})


def test_the_milvus_resource_is_a_standalone_pod_with_its_settings_and_the_operators_probe():
    pod = milvus_pod(MILVUS, "milvus-img")
    (c,) = pod["spec"]["containers"]
    assert pod["metadata"]["name"] == "m-milvus-standalone" and pod["metadata"]["labels"]["tier"] == "index"
    assert c["image"] == "milvus-img" and c["args"][-2:] == ["--authorization-enabled", "true"]
    assert c["env"] == [{"name": "E", "value": "1"}] and c["resources"] == {"limits": {"memory": "4Gi"}}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 9091}
    assert pod["spec"]["securityContext"] == {"runAsUser": 1000} and c["securityContext"]["readOnlyRootFilesystem"]
    with pytest.raises(ValueError, match="only mode standalone"):
        milvus_pod({**MILVUS, "spec": {**MILVUS["spec"], "mode": "cluster"}}, "milvus-img")


def test_services_resolve_by_name_and_a_url_to_a_service_port_gets_the_target_port():
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{
        "name": "c",
        "args": ["--a=http://retrieval-predictor", "--b=http://retrieval-predictor.ns.svc.cluster.local:80/x",
                 "--c=http://retrieval-predictor-other", "--d=redis.ns:6379"],
        "env": [{"name": "U", "value": "https://retrieval-predictor"}, {"name": "S", "valueFrom": {}}],
    }]}}  # fmt: skip
    services = [Service("retrieval-predictor", "ns", "10.0.0.2", {80: 8080}), Service("redis", "ns", "10.0.0.3", {})]
    out = with_services(pod, services)
    (c,) = out["spec"]["containers"]
    assert c["args"] == ["--a=http://retrieval-predictor:8080", "--b=http://retrieval-predictor.ns.svc.cluster.local:8080/x",
                         "--c=http://retrieval-predictor-other", "--d=redis.ns:6379"]  # fmt: skip
    assert c["env"][0]["value"] == "https://retrieval-predictor"  # no Service port 443: left as it was
    assert out["spec"]["hostAliases"][0] == {"ip": "10.0.0.2", "hostnames": [
        "retrieval-predictor", "retrieval-predictor.ns", "retrieval-predictor.ns.svc",
        "retrieval-predictor.ns.svc.cluster.local"]}  # fmt: skip


def test_podman_gets_no_unpublished_ports_and_probes_by_port_number():
    pod = {"spec": {"containers": [{
        "name": "c", "ports": [{"name": "http", "containerPort": 8000}, {"containerPort": 9, "hostPort": 19}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
    }]}}  # fmt: skip
    (c,) = _unpublished(pod)["spec"]["containers"]
    assert c["ports"] == [{"containerPort": 9, "hostPort": 19}] and c["readinessProbe"]["httpGet"]["port"] == 8000
    assert len(pod["spec"]["containers"][0]["ports"]) == 2


def test_references_to_env_vars_in_args_are_expanded_as_the_kubelet_does():
    # podman 4.3 runs `$(NAME)` literally; Kubernetes substitutes the container's env var (the actions Deployment
    # names its dead-letter folder after the pod this way)
    pod = {
        "metadata": {"name": "hf-actions"},
        "spec": {"containers": [{
            "name": "c", "command": ["run", "$(MODE)"],
            "args": ["--dir=/d/$(POD_NAME)", "--cost=$$(MODE)", "--x=$(UNKNOWN)", "$(MODE)$(MODE)"],
            "env": [{"name": "MODE", "value": "fast"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        }]},
    }  # fmt: skip
    container = local_pod(pod, {}, {}, {})["spec"]["containers"][0]
    assert container["command"] == ["run", "fast"]
    assert container["args"] == ["--dir=/d/hf-actions", "--cost=$(MODE)", "--x=$(UNKNOWN)", "fastfast"]
