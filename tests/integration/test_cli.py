"""The `homefeed` command line, in-process through click's runner."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from homefeed.cli import main

pytestmark = pytest.mark.integration


def _all_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("command", [(), *list(_all_commands(main))], ids=lambda c: " ".join(c) or "homefeed")
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3


def test_simulate_then_summary(tmp_path):
    runner = CliRunner()
    out = tmp_path / "w"
    result = runner.invoke(main, ["simulate", "--preset", "tiny", "--users", "200", "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "world written" in result.output
    result = runner.invoke(main, ["summary", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["rows"]["users"] == 200
    assert sum(s["users"] for s in summary["segments"]) == 200
    assert 0 < summary["rate_per_impression"]["repin"] < 0.2


def test_validate_writes_valid_rows_and_dead_letter_and_exits_nonzero(tmp_path):
    src = tmp_path / "events.csv"
    pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "pin_id": [5, 6, 7],
            "action": ["impression", "like", "repin"],
            "ts": [1_767_225_600_000, 1_767_225_600_001, 1_767_225_600],
            "request_id": [1, 1, 2],
            "surface": ["homefeed"] * 3,
        }
    ).to_csv(src, index=False)
    result = CliRunner().invoke(main, ["validate", "events", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "1 valid, 2 rejected" in result.output
    assert "row 1: action" in result.output and "row 2: ts: value looks like epoch seconds" in result.output
    assert len(pd.read_parquet(tmp_path / "out" / "events.parquet")) == 1
    assert len((tmp_path / "out" / "dead_letter" / "events.jsonl").read_text().splitlines()) == 2


def test_validate_missing_column_is_a_clear_error(tmp_path):
    src = tmp_path / "e.csv"
    pd.DataFrame({"user_id": [1]}).to_csv(src, index=False)
    result = CliRunner().invoke(main, ["validate", "events", str(src), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "missing column(s)" in result.output


def test_bad_settings_file_is_a_usage_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("world:\n  n_pins: 5\n")
    result = CliRunner().invoke(main, ["--config", str(cfg), "simulate", "--out", str(tmp_path / "w")])
    assert result.exit_code == 2 and "n_pins" in result.output


@pytest.mark.parametrize("name", ["homefeed_training", "homefeed_retraining", "embedding_refresh"])
def test_pipeline_compile_writes_the_golden_ir(tmp_path, name):
    from pipelines.compile import golden

    out = tmp_path / "p.yaml"
    result = CliRunner().invoke(main, ["pipeline", "compile", "--pipeline", name, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == golden(name).read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pipeline", "run"], "pass --local"),
        (["pipeline", "run", "--local", "--set", "epochs=3"], "NAME one of source"),
        (["pipeline", "run", "--local", "--set", "retrieval_epochs=0"], "retrieval_epochs"),
        (["pipeline", "run", "--local", "--set", "ray_backend=slurm"], "ray_backend must be one of"),
        (["pipeline", "run", "--local", "--set", "deploy_target=k8s:x"], "deploy target must be"),
        (["pipeline", "run", "--local", "--set", 'gate_policy={"recall@10": {}}'], "recall@10.direction: required"),
        (["pipeline", "run", "--local", "--pipeline", "nope"], "Invalid value for '--pipeline'"),
        (["pipeline", "submit", "--host", "http://127.0.0.1:9"], "a cluster run needs registry and deploy_target"),
    ],
)
def test_pipeline_run_refuses_bad_parameters_before_running(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("HOMEFEED_WORKSPACE", str(tmp_path))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_serve_and_drift_without_a_run_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HOMEFEED_WORKSPACE", str(tmp_path))
    for args in (["serve", "ranking"], ["drift"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "run the pipeline first" in result.output, result.output


def test_drift_on_a_dataset_prints_the_rates_and_writes_the_report(tiny_world, tmp_path):
    result = CliRunner().invoke(main, ["drift", "--dataset", str(tiny_world), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "repin" in result.output and "hide" in result.output
    assert "core" in result.output and "drifted distributions" in result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["actions"]) == {"repin", "click", "hide"}
    (folder,) = (p for p in (tmp_path / "r").iterdir() if p.is_dir())  # the window's, named by its end
    assert summary["html"] == str(folder / "report.html") and summary["json"] == str(folder / "report.json")
    assert (folder / "report.html").stat().st_size > 0 and "report:" in result.output


def test_stream_refuses_a_directory_that_is_not_a_feature_store_and_a_missing_source(tiny_world, tmp_path):
    from components.features.store import build_feature_store

    source = tmp_path / "events.jsonl"
    source.write_text('{"user_id": 1}\n')
    result = CliRunner().invoke(main, ["stream", str(source), "--features", str(tmp_path)])
    assert result.exit_code == 2 and "not a feature store (no feature_store.yaml)" in result.output
    build_feature_store(tiny_world, tmp_path / "fs")
    result = CliRunner().invoke(main, ["stream", str(tmp_path / "nope.jsonl"), "--features", str(tmp_path / "fs")])
    assert result.exit_code == 2 and "is not a file" in result.output


def test_stream_then_summary_and_dead_letter(tiny_world, tmp_path):
    from components.features.store import build_feature_store

    build_feature_store(tiny_world, tmp_path / "fs")
    good = {
        "user_id": 1,
        "pin_id": 2,
        "action": "repin",
        "ts": 1_767_226_387_455,
        "request_id": 7,
        "surface": "homefeed",
    }
    source = tmp_path / "events.jsonl"
    source.write_text(json.dumps(good) + "\n" + json.dumps({**good, "action": "like"}) + "\n")
    args = ["stream", str(source), "--features", str(tmp_path / "fs"), "--summary", str(tmp_path / "s.json")]
    result = CliRunner().invoke(main, [*args, "--dead-letter", str(tmp_path / "dead")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["counters"]["applied"] == 1 and summary["counters"]["invalid"] == 1
    assert "rejected records" in result.output
    rejected = [json.loads(line) for line in (tmp_path / "dead" / "stream_events.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejected] == [1]


@pytest.mark.slow
def test_eval_retrieval_trains_the_chosen_variant_and_writes_its_tables(tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "retrieval", "--source", "world:tiny", "--variants", "plain", "--epochs", "1", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = json.loads((out / "retrieval_eval.json").read_text())
    assert list(written["variants"]) == ["plain"] and written["users"] > 0
    for table in (written["popularity"], written["variants"]["plain"]):
        assert set(table["overall"]) == {"100", "1000"}
        assert 0.0 <= table["overall"]["100"] <= table["overall"]["1000"] <= 1.0
    assert "| plain |" in (out / "retrieval_eval.md").read_text()


def test_eval_retrieval_refuses_an_unknown_variant(tmp_path):
    result = CliRunner().invoke(main, ["eval", "retrieval", "--variants", "plain,fm", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown variants ['fm']" in result.output
