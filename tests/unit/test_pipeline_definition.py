"""The pipelines as a cluster sees them: each compiled IR matches its committed golden file; the steps are wired as
designed (release steps only under the gate's condition); the Kubernetes settings (the workspace PVC on training
steps, the registry Secret on the release steps, GPU and resource requests) are in the IR; and the parameters are
exactly the typed PipelineParams (names, types and defaults)."""

from __future__ import annotations

import inspect

import pytest
import yaml
from pydantic import ValidationError

from pipelines.compile import PIPELINES, compile_pipeline, golden
from pipelines.params import DEFAULTS, PipelineParams
from pipelines.stages import MILVUS_SECRET, REDIS_SECRET, REGISTRY_SECRET

pytestmark = pytest.mark.unit

TRAIN = {"features", "pretrain-ids", "train-retrieval", "train-ranking", "evaluate", "gate"}
TOP_LEVEL = {
    "homefeed_training": {"data", "monitor", "condition-1"} | TRAIN,
    "homefeed_retraining": {"data", "window", "condition-1"} | TRAIN,
    "embedding_refresh": {"data", "features", "champion", "index", "deploy"},
}


def load(name: str) -> tuple[dict, dict]:
    """The pipeline spec and the Kubernetes platform spec of a golden file (two YAML documents)."""
    spec, platform = yaml.safe_load_all(golden(name).read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize("name", PIPELINES)
def test_compiled_pipeline_matches_golden(tmp_path, name):
    out = compile_pipeline(tmp_path / f"{name}.yaml", name)
    assert out.read_text() == golden(name).read_text(), (
        f"the compiled pipeline differs from pipelines/golden/{name}.yaml; if the change is intended, "
        "run `homefeed pipeline compile --golden` and review the diff"
    )


@pytest.mark.parametrize("name", PIPELINES)
def test_golden_steps_and_one_pinned_image(name):
    spec, _ = load(name)
    assert set(spec["root"]["dag"]["tasks"]) == TOP_LEVEL[name]
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert len(images) == 1 and not images.pop().endswith(":latest")


@pytest.mark.parametrize("name", ["homefeed_training", "homefeed_retraining"])
def test_index_and_deploy_run_only_when_the_gate_passes(name):
    spec, _ = load(name)
    tasks = spec["root"]["dag"]["tasks"]
    condition = tasks["condition-1"]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--gate-Output'] == true"
    )
    assert condition["dependentTasks"] == ["gate"] or "gate" in condition["dependentTasks"]
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"index", "deploy"}
    assert inner["deploy"]["dependentTasks"] == ["index"]
    assert set(tasks["gate"]["dependentTasks"]) >= {"evaluate"}
    assert set(tasks["train-ranking"]["dependentTasks"]) >= {"train-retrieval"}
    assert set(tasks["train-retrieval"]["dependentTasks"]) >= {"pretrain-ids"}


@pytest.mark.parametrize("name", ["homefeed_training", "homefeed_retraining"])
def test_cluster_settings_are_in_the_ir(name):
    spec, k8s = load(name)
    for step in ("pretrain-ids", "train-retrieval", "train-ranking"):
        (mount,) = k8s[f"exec-{step}"]["pvcMount"]
        assert mount["mountPath"] == "/mnt/homefeed-work" and mount["constant"] == "homefeed-work"
    for step in ("gate", "deploy"):
        (secret,) = k8s[f"exec-{step}"]["secretAsEnv"]
        assert secret["secretName"] == REGISTRY_SECRET and secret["optional"] is True
        assert {e["envVar"] for e in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                              "AWS_ENDPOINT_URL"}  # fmt: skip
    resources = spec["deploymentSpec"]["executors"]["exec-train-ranking"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "pipelinechannel--ranking_gpus" in resources["accelerator"]["resourceCount"]  # a run parameter
    assert resources["memoryLimit"] == 8.0 and resources["cpuRequest"] == 2.0
    # the training steps are told where to run and get a unique id to name their RayJob
    params = spec["root"]["dag"]["tasks"]["train-ranking"]["inputs"]["parameters"]
    assert params["ray_backend"]["componentInputParameter"] == "ray_backend"
    assert params["job_id"]["runtimeValue"]["constant"] == "{{$.pipeline_task_uuid}}"


def _task(spec: dict, name: str) -> dict:
    """The task `name` wherever it sits: at the root, or inside a condition's DAG."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    (task,) = [dag["tasks"][name] for dag in dags if name in dag["tasks"]]
    return task


@pytest.mark.parametrize("name", PIPELINES)
def test_the_index_step_gets_index_uri_and_the_milvus_token(name):
    spec, k8s = load(name)
    (secret,) = k8s["exec-index"]["secretAsEnv"]
    assert secret["secretName"] == MILVUS_SECRET and secret["optional"] is True  # a Lite run needs no token
    assert secret["keyToEnv"] == [{"envVar": "MILVUS_TOKEN", "secretKey": "token"}]
    passed = _task(spec, "index")["inputs"]["parameters"]["index_uri"]["componentInputParameter"]
    assert passed in ("index_uri", "pipelinechannel--index_uri")  # the run's parameter, at the root or in the gate
    assert spec["root"]["inputDefinitions"]["parameters"]["index_uri"]["defaultValue"] == ""


@pytest.mark.parametrize(
    "uri", ["http://homefeed-milvus-milvus.homefeed.svc.cluster.local:19530", "https://milvus.example.com:443/"]
)
def test_index_uri_accepts_a_server_address(uri):
    assert PipelineParams(index_uri=uri).index_uri == uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("milvus:19530", r"index_uri must be http\(s\)://host:port of a Milvus server, got 'milvus:19530'"),
        ("http://milvus", r"got 'http://milvus'"),
        ("grpc://milvus:19530", r"got 'grpc://milvus:19530'"),
        ("http://milvus:port", r"got 'http://milvus:port'"),
        ("data/index/milvus.db", r"got 'data/index/milvus.db'"),
        ("http://milvus:19530/db1", "nothing after the port"),
        ("http://root:s3cret@milvus:19530", r"must not carry credentials: set them in \$MILVUS_TOKEN"),
    ],
)
def test_a_bad_index_uri_is_refused_when_the_parameters_are_read(uri, message):
    with pytest.raises(ValidationError, match=message) as err:
        PipelineParams(index_uri=uri)
    assert "s3cret" not in str(err.value)  # a password in a uri is never echoed


@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_parameters_are_typed_params(name):
    fields = PipelineParams.model_fields
    signature = inspect.signature(PIPELINES[name].pipeline_func)
    assert set(signature.parameters) <= set(fields)
    for param_name, param in signature.parameters.items():
        assert param.default == getattr(DEFAULTS, param_name), param_name
        assert param.annotation is fields[param_name].annotation, param_name


def test_every_typed_param_is_used_by_some_pipeline():
    used = set().union(*(inspect.signature(p.pipeline_func).parameters for p in PIPELINES.values()))
    assert used == set(PipelineParams.model_fields)


def test_the_factory_takes_types_and_defaults_from_pipeline_params_and_refuses_unknown_names():
    from pipelines.factory import pipeline_of, signature

    sig = signature(("seed", "ray_workers"), None)
    assert [(p.name, p.annotation, p.default) for p in sig.parameters.values()] == [
        ("seed", int, DEFAULTS.seed),
        ("ray_workers", int, DEFAULTS.ray_workers),
    ]
    with pytest.raises(ValueError, match="not pipeline parameters"):
        pipeline_of("x", "x", ("seed", "epochs"))


def test_a_stage_reading_a_parameter_its_pipeline_does_not_declare_fails_at_definition():
    from pipelines.factory import placeholders

    p = placeholders({"seed": 3})
    assert p.seed == 3
    with pytest.raises(AttributeError):
        _ = p.ray_workers


@pytest.mark.parametrize("name", PIPELINES)
def test_the_features_step_gets_the_redis_password(name):
    _spec, k8s = load(name)
    (secret,) = k8s["exec-features"]["secretAsEnv"]
    assert secret["secretName"] == REDIS_SECRET and secret["optional"] is True  # a SQLite run needs none
    assert secret["keyToEnv"] == [{"envVar": "REDIS_PASSWORD", "secretKey": "password"}]
