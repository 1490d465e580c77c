"""pipelines.remote with the real kfp.Client against a replayed KFP v2beta1 REST API.

The endpoints scripted here are the ones kfp 2.17 calls, found by running it against RecordedAPI: healthz at
construction (only when no namespace is given), the experiment lookup by name (and its creation when missing), then
the run or recurring-run creation with the pipeline spec inline. The pipeline is a tiny one compiled here, so these
tests do not depend on the project's own pipelines.
"""

from __future__ import annotations

import json
from pathlib import Path

import kfp
import pytest
import yaml
from kfp import compiler, dsl
from recorded_api import RecordedAPI, load_fixture, reply

from pipelines import remote

pytestmark = pytest.mark.integration

PARAMS = {"epochs": 3, "learning_rate": 0.001, "world": "tiny"}
EXPERIMENT_ID = load_fixture("kfp/experiments_homefeed")["experiments"][0]["experiment_id"]
NAME_FILTER = {"predicates": [{"operation": 1, "key": "display_name", "stringValue": "homefeed"}]}


def _scale(a: int, b: float) -> float:
    return a * b


def _tiny_pipeline(epochs: int = 1, learning_rate: float = 0.01, world: str = "tiny"):
    scale(a=epochs, b=learning_rate)


# kfp reads parameter types from the annotations and takes a string ("int", as `from __future__ import annotations`
# leaves them) for an artifact type name, so the real types are put back before decorating.
_scale.__annotations__ = {"a": int, "b": float, "return": float}
_tiny_pipeline.__annotations__ = {"epochs": int, "learning_rate": float, "world": str}
scale = dsl.component(base_image="python:3.11-slim")(_scale)
tiny_pipeline = dsl.pipeline(name="tiny-pipeline")(_tiny_pipeline)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kfp") / "tiny.yaml"
    compiler.Compiler().compile(tiny_pipeline, str(path))
    return path


@pytest.fixture(autouse=True)
def no_local_kfp_context(tmp_path, monkeypatch):
    # kfp.Client reads (and in multi-user mode writes) ~/.config/kfp/context.json; keep a developer's out of the tests.
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))


def experiments_query(namespace: str = "") -> dict[str, str]:
    return {"filter": json.dumps(NAME_FILTER), "namespace": namespace}


def test_submit_creates_experiment_and_run_with_the_spec_and_params(package):
    script = [
        reply("GET", "/apis/v2beta1/healthz", fixture="kfp/healthz"),
        reply("GET", "/apis/v2beta1/experiments", fixture="kfp/experiments_empty", query=experiments_query()),
        reply("POST", "/apis/v2beta1/experiments", fixture="kfp/experiment_created"),
        reply("POST", "/apis/v2beta1/runs", fixture="kfp/run_created"),
    ]
    with RecordedAPI(script) as api:
        kfp_client = remote.client(api.url, existing_token="s3cr3t")
        result = remote.submit(kfp_client, package, PARAMS, experiment="homefeed", run_name="homefeed-2025-06-02")
    api.assert_all_used()
    run = load_fixture("kfp/run_created")
    assert result == {
        "run_id": run["run_id"],
        "run_url": f"{api.url}/#/runs/details/{run['run_id']}",
        "experiment_id": EXPERIMENT_ID,
        "state": "PENDING",
        "host": api.url,
    }
    assert {r.headers.get("authorization") for r in api.requests} == {"Bearer s3cr3t"}
    (create_experiment,) = api.sent("POST", "/apis/v2beta1/experiments")
    assert create_experiment.body["display_name"] == "homefeed"
    (create_run,) = api.sent("POST", "/apis/v2beta1/runs")
    body = create_run.body
    assert body["display_name"] == "homefeed-2025-06-02"
    assert body["experiment_id"] == EXPERIMENT_ID
    assert body["runtime_config"] == {"parameters": PARAMS}
    assert body["pipeline_spec"] == yaml.safe_load(package.read_text())
    assert set(body["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]) == set(PARAMS)


def test_schedule_sends_the_cron_concurrency_and_catchup(package):
    namespace = "kubeflow-user-homefeed"
    script = [
        # With a namespace kfp skips healthz and scopes the experiment lookup to it.
        reply(
            "GET", "/apis/v2beta1/experiments", fixture="kfp/experiments_homefeed", query=experiments_query(namespace)
        ),
        reply("POST", "/apis/v2beta1/recurringruns", fixture="kfp/recurring_run_created"),
    ]
    with RecordedAPI(script) as api:
        kfp_client = remote.client(api.url, namespace=namespace)
        result = remote.schedule(kfp_client, package, PARAMS, name="homefeed-retrain", experiment="homefeed")
    api.assert_all_used()
    assert result == {
        "recurring_run_id": load_fixture("kfp/recurring_run_created")["recurring_run_id"],
        "experiment_id": EXPERIMENT_ID,
        "cron": "0 0 3 * * 1,4",
        "status": "ENABLED",
        "host": api.url,
    }
    (create,) = api.sent("POST", "/apis/v2beta1/recurringruns")
    body = create.body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1,4"}}
    assert body["max_concurrency"] == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert (body["display_name"], body["experiment_id"]) == ("homefeed-retrain", EXPERIMENT_ID)
    assert body["runtime_config"] == {"parameters": PARAMS}
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "tiny-pipeline"


def test_schedule_passes_non_default_settings(package):
    script = [
        reply("GET", "/apis/v2beta1/experiments", fixture="kfp/experiments_homefeed"),
        reply("POST", "/apis/v2beta1/recurringruns", fixture="kfp/recurring_run_created"),
    ]
    with RecordedAPI(script) as api:
        kfp_client = remote.client(api.url, namespace="kubeflow-user-homefeed")
        remote.schedule(
            kfp_client,
            package,
            {},
            name="nightly",
            experiment="homefeed",
            cron="0  30 2 * * *",
            max_concurrency=2,
            no_catchup=False,
            enable_caching=False,
        )
    api.assert_all_used()
    body = api.sent("POST", "/apis/v2beta1/recurringruns")[0].body
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"
    assert (body["max_concurrency"], body["no_catchup"]) == (2, False)
    tasks = body["pipeline_spec"]["root"]["dag"]["tasks"].values()
    assert tasks and all(t["cachingOptions"] == {} for t in tasks)  # caching off: enableCache false, dropped as default


@pytest.mark.parametrize("cron", ["0 3 * * 1,4", "0 0 3 * * 1,4 2026", ""])
def test_a_cron_without_six_fields_is_rejected_before_any_call(package, cron):
    with RecordedAPI([]) as api:
        kfp_client = remote.client(api.url, namespace="kubeflow-user-homefeed")
        with pytest.raises(ValueError, match="KFP needs 6"):
            remote.schedule(kfp_client, package, PARAMS, name="homefeed-retrain", experiment="homefeed", cron=cron)
    assert api.requests == []


def test_max_concurrency_outside_kfps_range_is_rejected(package):
    with RecordedAPI([]) as api:
        kfp_client = remote.client(api.url, namespace="kubeflow-user-homefeed")
        with pytest.raises(ValueError, match="between 1 and 10"):
            remote.schedule(kfp_client, package, PARAMS, name="x", experiment="homefeed", max_concurrency=0)
    assert api.requests == []


def test_api_errors_name_the_host_and_the_servers_message(package):
    script = [
        reply("GET", "/apis/v2beta1/experiments", fixture="kfp/experiments_homefeed"),
        reply("POST", "/apis/v2beta1/runs", status=400, fixture="kfp/error_invalid_input"),
    ]
    with RecordedAPI(script) as api:
        kfp_client = remote.client(api.url, namespace="kubeflow-user-homefeed")
        with pytest.raises(RuntimeError) as info:
            remote.submit(kfp_client, package, {"epochs": "three"}, experiment="homefeed", run_name="bad")
    api.assert_all_used()
    message = str(info.value)
    assert message.startswith(f"KFP API at {api.url}: submitting run 'bad' failed with HTTP 400")
    assert 'parameter "epochs" is not a NUMBER_INTEGER' in message
    assert "HTTP response headers" not in message  # not the ApiException's header dump


def test_a_missing_package_is_reported_before_any_call(tmp_path):
    with RecordedAPI([]) as api:
        kfp_client = remote.client(api.url, namespace="kubeflow-user-homefeed")
        with pytest.raises(FileNotFoundError, match="compiled pipeline package not found"):
            remote.submit(kfp_client, tmp_path / "nope.yaml", PARAMS, experiment="homefeed", run_name="r")
    assert api.requests == []
