"""The monitoring job on the tiny world's last day, with the ranking model trained on it: every figure in the
summary is checked against an independent computation (the engagement frame, the offline evaluation's HIT@3, the
realtime sequence definition), and the snapshot lands in an Evidently workspace whose dashboard plots it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from components.data.dataset import Dataset
from components.evaluate.offline import evaluate_ranking
from components.features.sequence import ActionLog
from components.train.examples import request_times
from monitoring.dashboard import PROJECT, open_project
from monitoring.engagement import engagement_frame
from monitoring.job import DAY_MS, Windows, run_window
from monitoring.window import Source, window_frame

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def monitored(tiny_artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    data = tiny_artifacts["data"]
    windows = Windows.ending(Source.load(data).end_ms(), current_days=1, reference_days=5)
    workspace = open_project(root / "evidently")
    summary = run_window(data, windows, root / "reports", tiny_artifacts["ranking"], workspace, max_requests=None)
    return {"data": data, "windows": windows, "summary": summary, "root": root, "workspace": workspace}


def test_engagement_rates_overall_and_per_group(monitored):
    ds, w, s = Dataset(monitored["data"]), monitored["windows"], monitored["summary"]
    events = ds.read("events")
    frame = engagement_frame(events[(events.ts >= w.current_start) & (events.ts < w.end)], ds.read("users"))
    reference = engagement_frame(events[(events.ts >= w.reference_start) & (events.ts < w.current_start)])
    assert s["windows"]["current"]["impressions"] == len(frame)
    for action in ("repin", "click", "hide"):
        assert s["mean"][action] == pytest.approx(frame[action].mean())
        assert s["mean"][f"{action}_core"] == pytest.approx(frame.loc[frame.segment == "core", action].mean())
        assert s["mean"][f"{action}_noncore"] == pytest.approx(frame.loc[frame.segment != "core", action].mean())
        assert s["reference_mean"][action] == pytest.approx(reference[action].mean())
        assert s["drift"][f"{action}_flag"]["method"] == "z" and 0 <= s["drift"][f"{action}_flag"]["score"] <= 1


def test_hit_at_3_is_the_offline_evaluations(monitored, tiny_artifacts):
    w, s = monitored["windows"], monitored["summary"]
    offline = evaluate_ranking(monitored["data"], tiny_artifacts["ranking"], w.current_start, w.end)
    for head in ("click", "repin", "hide"):
        assert s["mean"][f"top3_{head}"] == pytest.approx(offline[f"hit@3_{head}"]), head
    assert all(0 < s["mean"][f"score_{h}"] < 1 for h in ("click", "repin", "hide"))


def test_sequence_length_is_the_served_sequences(monitored):
    w = monitored["windows"]
    frame = window_frame(monitored["data"], w.current_start, w.end)
    assert frame.attrs["impressions"] == len(frame)  # not sampled: a tiny window
    events = Dataset(monitored["data"]).read("events")
    sample = frame.sample(200, random_state=0)
    seqs = ActionLog(events).sequences_at(sample.user_id.to_numpy(), request_times(events, sample))
    assert np.array_equal(sample["seq_len"].to_numpy(), seqs.lengths)
    engaged = frame["engaged_action"].notna()
    assert frame.loc[engaged, "emb_pc1"].notna().all() and frame.loc[~engaged, "emb_pc1"].isna().all()


def test_drift_tests_and_reports_are_written(monitored):
    s = monitored["summary"]
    assert {"interest", "engaged_interest", "engaged_action", "seq_len", "emb_pc1", "score_repin"} <= set(s["drift"])
    assert s["drift"]["interest"]["method"] == "jensenshannon" and s["drift"]["seq_len"]["method"] == "wasserstein"
    report = json.loads(Path(s["json"]).read_text())
    assert len(report["metrics"]) > 20 and "repin" in Path(s["html"]).read_text()
    saved = json.loads((monitored["root"] / "reports" / monitored["windows"].label / "summary.json").read_text())
    assert saved["snapshot_id"] == s["snapshot_id"] and saved["mean"] == s["mean"]


def test_the_snapshot_is_in_the_workspace_and_the_dashboard_exists_once(monitored):
    ws, project = monitored["workspace"], monitored["workspace"][1]
    assert [str(r) for r in ws[0].list_runs(project.id)] == [monitored["summary"]["snapshot_id"]]
    again = open_project(monitored["root"] / "evidently")
    assert again[1].id == project.id and [p.name for p in again[0].list_projects()] == [PROJECT]
    model = again[1].dashboard.model()
    titles = [p.title for p in model.panels]
    assert len(titles) == len(set(titles)) == 13  # created once, not again on reopening
    assert {t.title for t in model.tabs} == {"Engagement", "Feature drift", "Model"}
    assert {"Engagement per impression", "repin rate: core vs non-core users", "HIT@3 on logged impressions"} <= set(
        titles
    )


def test_a_large_window_is_sampled_by_whole_requests(monitored):
    w = monitored["windows"]
    full = window_frame(monitored["data"], w.reference_start, w.current_start)
    part = window_frame(monitored["data"], w.reference_start, w.current_start, max_impressions=len(full) // 4)
    assert part.attrs["impressions"] == len(full) and len(full) // 5 < len(part) < len(full) // 3
    per_request = full.groupby("request_id").size()
    sampled = part.groupby("request_id").size()
    assert (sampled == per_request.loc[sampled.index]).all()  # every kept request has all its impressions
    columns = ["repin", "click", "hide", "seq_len", "interest"]
    kept = full.set_index(["request_id", "pin_id"]).loc[part.set_index(["request_id", "pin_id"]).index, columns]
    assert kept.reset_index(drop=True).equals(part[columns].reset_index(drop=True))  # the same rows, not recomputed


def test_an_empty_window_is_a_clear_error(monitored):
    with pytest.raises(ValueError, match="no impressions"):
        window_frame(monitored["data"], 0, DAY_MS)


def test_monitor_cli_runs_days_and_records_trigger_decisions(tiny_artifacts, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from homefeed.cli import main
    from monitoring.trigger import LOG_FILE

    monkeypatch.setenv("HOMEFEED_WORKSPACE", str(tmp_path))
    args = ["monitor", "run", "--dataset", str(tiny_artifacts["data"]), "--days", "2", "--trigger", "--dry-run"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    decisions = [json.loads(line) for line in (tmp_path / "monitoring" / LOG_FILE).read_text().splitlines()]
    assert len(decisions) == 2 and all(d["dry_run"] and d["run"] is None for d in decisions)
    assert all(d["snapshot_id"] for d in decisions) and "report:" in result.output
    # the same window again is refused rather than counted twice in an episode
    again = CliRunner().invoke(main, args[:-1])
    assert again.exit_code == 1 and "already evaluated" in again.output
    reports = list((tmp_path / "monitoring" / "reports").iterdir())
    assert len(reports) == 2  # refused before any window was computed again


def test_evidently_ui_serves_the_workspace(monitored):
    import subprocess
    import sys
    import time

    import httpx

    from components.cluster.launcher import free_ports

    (port,) = free_ports(1)
    evidently = Path(sys.executable).with_name("evidently")
    args = [str(evidently), "ui", "--workspace", str(monitored["root"] / "evidently"), "--port", str(port)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                projects = httpx.get(f"http://127.0.0.1:{port}/api/projects", timeout=2).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, "the Evidently UI did not start"
                time.sleep(0.5)
        assert [p["name"] for p in projects] == [PROJECT]
        snapshots = httpx.get(f"http://127.0.0.1:{port}/api/projects/{projects[0]['id']}/snapshots", timeout=5)
        assert monitored["summary"]["snapshot_id"] in snapshots.text
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def _read_only_view(source: Path, target: Path) -> Iterator[Path]:
    """`target`: a read-only bind mount of `source`, the claim as the UI's pod mounts it while the job writes it."""
    target.mkdir()
    bound = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"a read-only bind mount needs root and mount(8): {bound.stderr.strip() or bound.returncode}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True, capture_output=True)
        with pytest.raises(OSError, match="Read-only file system"):
            (target / "probe").touch()
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@dataclass
class _Served:
    url: str
    process: subprocess.Popen

    def projects(self) -> list[dict]:
        """The project list, polled until the UI answers it (a 200) within 30 seconds."""
        import httpx

        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                reply = httpx.get(f"{self.url}/api/projects", timeout=2)
                if reply.status_code == 200:
                    return reply.json()
            assert time.monotonic() < deadline and self.process.poll() is None, "the Evidently UI did not answer"
            time.sleep(0.3)


@contextlib.contextmanager
def _evidently_ui(command: list[str], workspace: Path) -> Iterator[_Served]:
    """`command` (an Evidently UI, directly or through `homefeed monitor ui`) on a free port, $HOMEFEED_WORKSPACE
    `workspace`; stopped at exit."""
    from components.cluster.launcher import free_ports

    (port,) = free_ports(1)
    env = {**os.environ, "HOMEFEED_WORKSPACE": str(workspace)}
    process = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield _Served(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        process.wait(timeout=20)


def _tree(folder: Path) -> dict[str, str]:
    """Every folder and file under `folder`, a file with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in folder.rglob("*")}  # fmt: skip


MONITOR_UI = [str(Path(sys.executable).with_name("homefeed")), "monitor", "ui", "--read-only"]


def test_the_read_only_ui_lists_the_project_and_deletes_nothing(monitored, tmp_path):
    """`homefeed monitor ui --read-only` (the Deployment's) on a read-only view of a workspace a monitoring job wrote:
    the project is listed, and a DELETE through its API is refused and changes no file."""
    import httpx

    job = tmp_path / "job"
    shutil.copytree(monitored["root"] / "evidently", job / "monitoring" / "evidently")
    before = _tree(job)
    with _read_only_view(job, tmp_path / "ui") as ui, _evidently_ui(MONITOR_UI, ui) as served:
        (project,) = served.projects()
        assert project["name"] == PROJECT
        deleted = httpx.delete(f"{served.url}/api/v2/projects/{project['id']}", timeout=10)
        assert deleted.status_code == 403  # every write needs the secret the command made up and told nobody
        assert [p["name"] for p in served.projects()] == [PROJECT]  # still listed: the UI's state is untouched too
        snapshots = httpx.get(f"{served.url}/api/projects/{project['id']}/snapshots", timeout=10)
        assert monitored["summary"]["snapshot_id"] in snapshots.text
    assert _tree(job) == before


def test_the_read_only_mount_alone_keeps_the_workspace(monitored, tmp_path):
    """Evidently itself, without the command's secret, on the read-only view: the DELETE fails (a 500) and the
    files stay. Evidently drops the project from its listing until it restarts, which the secret prevents."""
    import httpx

    job = tmp_path / "job"
    shutil.copytree(monitored["root"] / "evidently", job / "evidently")
    before = _tree(job)
    evidently = [str(Path(sys.executable).with_name("evidently")), "ui", "--workspace"]
    with _read_only_view(job, tmp_path / "ui") as ui, _evidently_ui([*evidently, str(ui / "evidently")], ui) as served:
        (project,) = served.projects()
        deleted = httpx.delete(f"{served.url}/api/v2/projects/{project['id']}", timeout=10)
        assert deleted.status_code == 500
    assert _tree(job) == before


def test_the_read_only_ui_lists_no_projects_until_the_first_run(tmp_path):
    """Before the monitoring job's first run there is no workspace folder, and the UI may not create one: it answers
    with no projects (so its readiness probe passes), and serves the project once the job has created it."""
    job = tmp_path / "job"
    job.mkdir()
    with _read_only_view(job, tmp_path / "ui") as ui, _evidently_ui(MONITOR_UI, ui) as served:
        assert served.projects() == []
        assert _tree(job) == {}
        open_project(job / "monitoring" / "evidently")  # what `homefeed monitor run` does first
        deadline = time.monotonic() + 30
        while not (listed := served.projects()):
            assert time.monotonic() < deadline, "the UI did not serve the workspace once it was written"
            time.sleep(0.5)
        assert [p["name"] for p in listed] == [PROJECT]


def test_a_trigger_submits_the_retraining_pipeline_to_kfp(tiny_artifacts, tmp_path, monkeypatch):
    """Not a dry run: the policy fires on the window and `homefeed monitor run` submits homefeed_retraining through
    kfp.Client (to a replayed KFP API); the decision records the run it started."""
    import kfp
    import yaml
    from click.testing import CliRunner
    from recorded_api import RecordedAPI, reply

    from homefeed.cli import main
    from monitoring.trigger import LOG_FILE
    from pipelines.compile import golden

    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.setenv("HOMEFEED_WORKSPACE", str(tmp_path))
    policy = tmp_path / "policy.json"  # a rule every window crosses: any repin rate is below 1
    policy.write_text(json.dumps({"rules": [{"name": "always", "kind": "below", "column": "repin", "threshold": 1}]}))
    script = [
        reply("GET", "/apis/v2beta1/healthz", fixture="kfp/healthz"),
        reply("GET", "/apis/v2beta1/experiments", fixture="kfp/experiments_homefeed"),
        reply("POST", "/apis/v2beta1/runs", fixture="kfp/run_created"),
    ]
    cluster = ["--set", "registry=s3://models/homefeed", "--set", "deploy_target=kserve:homefeed"]
    args = ["monitor", "run", "--dataset", str(tiny_artifacts["data"]), "--trigger", "--policy", str(policy)]
    with RecordedAPI(script) as api:
        result = CliRunner().invoke(main, [*args, "--retrain-host", api.url, *cluster])
    assert result.exit_code == 0, result.output
    api.assert_all_used()
    (sent,) = api.sent("POST", "/apis/v2beta1/runs")
    spec_doc, platform_doc = yaml.safe_load_all(golden("homefeed_retraining").read_text())
    assert sent.body["pipeline_spec"] == {"pipeline_spec": spec_doc, "platform_spec": platform_doc}
    assert sent.body["runtime_config"]["parameters"]["deploy_target"] == "kserve:homefeed"
    (decision,) = [json.loads(line) for line in (tmp_path / "monitoring" / LOG_FILE).read_text().splitlines()]
    assert decision["trigger"] and not decision["dry_run"]
    assert decision["run"] == "e4b1f0a2-93c6-4d0f-b8e5-1c2d3e4f5a6b"  # the run id in kfp/run_created
    assert decision["crossed"][0]["rule"] == "always" and "retrain: always" in result.output


def test_bad_trigger_settings_are_refused_before_any_window(tiny_artifacts, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from homefeed.cli import main

    monkeypatch.setenv("HOMEFEED_WORKSPACE", str(tmp_path))
    base = ["monitor", "run", "--dataset", str(tiny_artifacts["data"]), "--trigger"]
    bad_policy = tmp_path / "policy.json"
    bad_policy.write_text(json.dumps({"rules": [{"name": "x", "kind": "rise", "column": "repin", "threshold": 1}]}))
    result = CliRunner().invoke(main, [*base, "--policy", str(bad_policy)])
    assert result.exit_code == 2 and "kind must be one of" in result.output
    # a cluster retraining without a registry is refused now, not when the policy first fires
    result = CliRunner().invoke(main, [*base, "--retrain-host", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "needs registry" in result.output
    assert not (tmp_path / "monitoring" / "reports").exists()


def test_the_dashboard_screenshot_is_a_rendered_page(monitored, tmp_path):
    """`homefeed monitor screenshot`'s capture: Evidently's UI in headless Chromium (Debian's package)."""
    import shutil

    from PIL import Image

    from monitoring.screenshot import screenshot

    if not shutil.which("chromium"):
        pytest.skip("headless Chromium is not installed (Debian package chromium, which .ci/run installs)")
    png = screenshot(monitored["root"] / "evidently", tmp_path / "dashboard.png", width=1000, height=1200)
    image = Image.open(png).convert("L")
    assert image.width == 1000 and 400 < image.height <= 1200  # cropped only where the page is blank
    pixels = list(image.getdata())
    # a rendered dashboard, not a blank page: many grey levels (text, lines, panels) and more than a little ink
    assert len(set(pixels)) > 16 and sum(p < 200 for p in pixels) > 0.01 * len(pixels)


def test_monitor_cli_reads_an_event_log_with_the_registrys_champion(tiny_artifacts, tmp_path, monkeypatch):
    # the live loop's monitoring: the windows are the log's days only, scored with the champion fetched from the
    # registry (the CronJob's `--dataset log:... --registry ...`)
    import shutil

    from click.testing import CliRunner

    from components.registry import Registry
    from components.release import MODEL_NAME
    from components.stream.offline_log import OfflineEventLog
    from homefeed.cli import main

    monkeypatch.setenv("HOMEFEED_WORKSPACE", str(tmp_path / "ws"))
    data = tiny_artifacts["data"]
    events = Dataset(data).read_arrow("events")
    first = int(np.asarray(events.column("ts")).max()) + 1 - 2 * DAY_MS  # the last two days were "served"
    served = events.filter(np.asarray(events.column("ts")) >= first)
    log = OfflineEventLog(tmp_path / "log")
    log.hold(served)
    log.write(0, served.num_rows)
    source = f"log:{tmp_path / 'log'}?catalog={data}"
    registry = Registry(str(tmp_path / "registry"))
    args = ["monitor", "run", "--dataset", source, "--registry", str(tmp_path / "registry"), "--max-requests", "200"]
    empty = CliRunner().invoke(main, args)
    assert empty.exit_code == 2 and "has no champion yet" in empty.output
    shutil.copytree(tiny_artifacts["ranking"], tmp_path / "bundle" / "ranking")
    registry.promote(MODEL_NAME, registry.register(MODEL_NAME, tmp_path / "bundle", {}, "test-run"), "test")

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (summary_path,) = (tmp_path / "ws" / "monitoring" / "reports").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    # the reference starts at the log's first event, not among the catalog's earlier days
    assert summary["windows"]["reference"]["start_ms"] == int(np.asarray(served.column("ts")).min())
    assert summary["model"] == str(tmp_path / "ws" / "monitoring" / "champion" / "v1" / "ranking")
    assert summary["mean"]["top3_repin"] is not None  # scored with the champion
    bad = CliRunner().invoke(main, ["monitor", "run", "--dataset", f"log:{tmp_path / 'nolog'}?catalog={data}"])
    assert bad.exit_code == 2 and "holds no offline event log" in bad.output
