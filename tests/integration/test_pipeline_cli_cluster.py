"""`homefeed pipeline submit|schedule` end to end against a replayed Kubeflow Pipelines API: the CLI compiles the
project's own pipeline, validates the parameters, and kfp.Client sends exactly that pipeline and those parameters.
(The KFP client's own edges are in test_kfp_remote.py.)"""

from __future__ import annotations

import json

import kfp
import pytest
import yaml
from click.testing import CliRunner
from recorded_api import RecordedAPI, reply

from homefeed.cli import main
from homefeed.pipeline_commands import RETRAIN_CRON
from pipelines.compile import golden

pytestmark = pytest.mark.integration

CLUSTER = ["--set", "registry=s3://models/homefeed", "--set", "deploy_target=kserve:homefeed",
           "--set", "ray_backend=kuberay"]  # fmt: skip
NAME_FILTER = {"predicates": [{"operation": 1, "key": "display_name", "stringValue": "homefeed"}]}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.setenv("HOMEFEED_WORKSPACE", str(tmp_path / "ws"))


def kfp_script(create: str, fixture: str) -> list:
    return [
        reply("GET", "/apis/v2beta1/healthz", fixture="kfp/healthz"),
        reply("GET", "/apis/v2beta1/experiments", fixture="kfp/experiments_homefeed",
              query={"filter": json.dumps(NAME_FILTER), "namespace": ""}),
        reply("POST", create, fixture=fixture),
    ]  # fmt: skip


def test_schedule_sends_the_retraining_pipeline_twice_a_week():
    with RecordedAPI(kfp_script("/apis/v2beta1/recurringruns", "kfp/recurring_run_created")) as api:
        result = CliRunner().invoke(main, ["pipeline", "schedule", "--host", api.url, *CLUSTER])
    assert result.exit_code == 0, result.output
    api.assert_all_used()
    (sent,) = api.sent("POST", "/apis/v2beta1/recurringruns")
    body = sent.body
    assert body["trigger"]["cron_schedule"]["cron"] == RETRAIN_CRON == "0 0 3 * * 1,4"
    assert body["max_concurrency"] == 1 and body["no_catchup"] is True
    spec_doc, platform_doc = yaml.safe_load_all(golden("homefeed_retraining").read_text())
    # with Kubernetes settings, kfp sends the pipeline spec and the platform spec (PVCs, Secrets) side by side
    assert body["pipeline_spec"] == {"pipeline_spec": spec_doc, "platform_spec": platform_doc}
    params = body["runtime_config"]["parameters"]
    assert params["registry"] == "s3://models/homefeed" and params["ray_backend"] == "kuberay"
    assert params["window_days"] == 14.0 and "reference_days" not in params  # only what the pipeline declares
    assert "scheduled" in result.output


def test_submit_sends_the_training_pipeline_with_its_platform_spec():
    with RecordedAPI(kfp_script("/apis/v2beta1/runs", "kfp/run_created")) as api:
        result = CliRunner().invoke(main, ["pipeline", "submit", "--host", api.url, *CLUSTER])
    assert result.exit_code == 0, result.output
    api.assert_all_used()
    (sent,) = api.sent("POST", "/apis/v2beta1/runs")
    spec_doc, platform_doc = yaml.safe_load_all(golden("homefeed_training").read_text())
    assert sent.body["pipeline_spec"] == {"pipeline_spec": spec_doc, "platform_spec": platform_doc}
    executors = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-train-ranking"]["pvcMount"][0]["mountPath"] == "/mnt/homefeed-work"
    assert sent.body["display_name"] == "homefeed_training"
    assert sent.body["runtime_config"]["parameters"]["deploy_target"] == "kserve:homefeed"


def test_bad_cluster_parameters_are_refused_before_any_call():
    with RecordedAPI([]) as api:
        result = CliRunner().invoke(main, ["pipeline", "submit", "--host", api.url, *CLUSTER, "--set", "ray_workers=0"])
    assert result.exit_code == 2 and "ray_workers" in result.output
    assert api.requests == []


def test_deployment_without_one_says_what_to_do():
    result = CliRunner().invoke(main, ["deployment"])
    assert result.exit_code == 0 and "nothing deployed" in result.output
