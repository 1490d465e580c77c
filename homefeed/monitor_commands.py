"""`homefeed monitor run|ui`: the monitoring job over a dataset's days, and the Evidently UI on its workspace."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from rich.table import Table

from homefeed.context import Ctx, console
from homefeed.pipeline_commands import set_option


@click.group()
def monitor() -> None:
    """Engagement, feature and prediction drift per day, into an Evidently workspace (monitoring/)."""


@monitor.command("run")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="A pipeline run directory.")
@click.option("--dataset", help="A dataset directory, or log:<event log>?catalog=<dataset>: the offline event log of "
              "served traffic (only the log's days are monitored; the catalog gives pins, users and history).")  # fmt: skip
@click.option("--model", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Ranking model for prediction drift and HIT@3 (default: the run's, or the registry's champion).")  # fmt: skip
@click.option("--registry", "registry_uri",
              help="Score with this registry's champion (a path or s3://...), fetched once per version.")  # fmt: skip
@click.option("--days", type=int, default=1, show_default=True, help="Monitor the last N days, one window each.")
@click.option("--reference-days", type=float, default=7.0, show_default=True, help="Reference before each window.")
@click.option("--max-requests", type=int, default=2_000, show_default=True, help="Requests scored per window.")
@click.option("--trigger", is_flag=True, help="Apply the trigger policy; retrain when it says so.")
@click.option("--dry-run", is_flag=True, help="With --trigger: record what would happen, submit nothing.")
@click.option(
    "--retrain-host", help="With --trigger: submit homefeed_retraining to this KFP API (default: run it here)."
)
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --trigger: the policy as JSON (monitoring/trigger.py; default: TriggerPolicy.default).")  # fmt: skip
@set_option
@click.pass_obj
def run_cmd(
    obj: Ctx,
    run_dir,
    dataset,
    model,
    registry_uri,
    days,
    reference_days,
    max_requests,
    trigger,
    dry_run,
    retrain_host,
    policy_file,
    overrides,
):
    """Monitor the dataset's last DAYS days: Evidently snapshots (HTML + JSON) into the workspace's project, and
    with --trigger the retraining policy over each window (decisions in <workspace>/monitoring/triggers.jsonl).
    --set NAME=VALUE sets a parameter of the retraining run the policy submits."""
    from monitoring import trigger as policy_
    from monitoring.dashboard import open_project
    from monitoring.job import DAY_MS
    from monitoring.replay import monitor_days
    from monitoring.window import Source
    from pipelines.local import load_run

    try:
        policy = (
            policy_.TriggerPolicy.from_file(policy_file, dry_run)
            if policy_file
            else policy_.TriggerPolicy.default(dry_run)
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    root = obj.settings.workspace / "monitoring"
    log_source, not_before = None, None
    if dataset is not None and dataset.startswith("log:"):
        log_source = dataset
        dataset, not_before = _log_dataset(dataset, root / "log-dataset")
    elif dataset is not None:
        dataset = Path(dataset)
        if not dataset.is_dir():
            raise click.UsageError(f"--dataset {dataset}: no such dataset directory")
    if registry_uri and model is None:
        model = _champion_ranking(registry_uri, root / "champion")
    # the retraining's parameters are checked before any window is computed, not when the policy first fires; a
    # monitored log is what it retrains on unless --set source= says otherwise
    defaults = (f"source={log_source}",) if log_source else ()
    submit = _retraining(obj, retrain_host, defaults + overrides) if trigger and not dry_run else None

    if dataset is None:
        try:
            run = load_run(run_dir or obj.settings.runs_dir)
        except FileNotFoundError as exc:
            raise click.UsageError(f"{exc}; or pass --dataset") from exc
        dataset = run.path("dataset")
        model = model or (run.path("ranking_model") if "ranking_model" in run.artifacts else None)
    if days < 1:
        raise click.UsageError(f"--days must be at least 1, got {days}")
    workspace = open_project(root / "evidently")
    source = Source.load(dataset)  # read once for every window
    end = source.end_ms()
    table = _table(model is not None)
    ends = [end - back * DAY_MS for back in range(days - 1, -1, -1)]
    seen = set(policy_.TriggerState.load(root).windows) & {str(e) for e in ends} if trigger else set()
    if seen:  # refused before any work: a window counted twice would skew its drift episode
        raise click.ClickException(
            f"{len(seen)} of these windows were already evaluated by the trigger policy "
            f"({root / policy_.STATE_FILE}); monitor new days, or run without --trigger"
        )
    try:
        days_run = monitor_days(source, ends, root, model, policy if trigger else None, submit, workspace,
                                reference_days, max_requests, not_before=not_before)  # fmt: skip
    except ValueError as exc:  # an empty window, or (a race) a window evaluated meanwhile
        raise click.UsageError(str(exc)) from exc
    for day in days_run:
        _add_row(table, day["label"], day["summary"], model is not None)
    decisions = [(day["label"], day["decision"]) for day in days_run if day["decision"] is not None]
    summary = days_run[-1]["summary"]
    console.print(table)
    for label, decision in decisions:
        mark = "[red]retrain[/]" if decision["trigger"] else "no retraining"
        extra = " (dry run: nothing submitted)" if decision["trigger"] and decision["dry_run"] else ""
        console.print(f"{label}: {mark}{extra} — {decision['why']}")
    console.print(f"report: {summary['html']}\nworkspace: {root / 'evidently'} (`homefeed monitor ui` to browse it)")


@monitor.command("ui")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--read-only", is_flag=True,
              help="Serve the workspace as `homefeed monitor run` wrote it: create nothing, refuse the API's "
              "writes, and list no projects until the first run has written it.")  # fmt: skip
@click.pass_obj
def ui_cmd(obj: Ctx, port: int, host: str, read_only: bool) -> None:
    """Serve the Evidently UI on the monitoring workspace (its project dashboard shows every metric over time)."""
    path = obj.settings.workspace / "monitoring" / "evidently"
    evidently = Path(sys.executable).with_name("evidently")
    args = [str(evidently), "ui", "--workspace", str(path), "--port", str(port), "--host", host]
    if not read_only:
        from monitoring.dashboard import open_project

        open_project(path)  # the project and its dashboard exist even before the first job
        console.print(f"Evidently UI on http://{host}:{port} (workspace {path}); Ctrl-C stops it")
        os.execv(args[0], args)
    # Evidently guards its write API (projects, dashboards, snapshots) with a secret when given one: a new one that
    # nobody knows makes every write a 403. Without it a DELETE on a read-only workspace fails with a 500 but the
    # project drops out of the UI's listing until it restarts.
    env = {**os.environ, "EVIDENTLY_SECRET": secrets.token_urlsafe(32)}
    if not path.is_dir():
        _serve_empty_until(path, args, env)
    console.print(f"Evidently UI on http://{host}:{port} (workspace {path}, read-only); Ctrl-C stops it")
    os.execve(args[0], args, env)


def _serve_empty_until(path: Path, args: list[str], env: dict[str, str], poll_s: float = 2.0) -> None:
    """Evidently's UI on an empty stand-in workspace (a new temporary folder) until `path` exists; then stopped, for
    the caller to serve `path` on the same port. Evidently itself, given a missing folder it may not create, answers
    its API with 500s until the folder appears, and the readiness probe would keep the UI out of service."""
    console.print(f"no monitoring workspace at {path} yet (`homefeed monitor run` writes it): no projects until then")
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # stop the stand-in too
    try:
        with tempfile.TemporaryDirectory(prefix="evidently-empty-") as empty:
            process = subprocess.Popen([*args[:3], empty, *args[4:]], env=env)
            try:
                while not path.is_dir():
                    if process.poll() is not None:
                        raise click.ClickException(f"the Evidently UI exited with status {process.returncode}")
                    time.sleep(poll_s)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


@monitor.command("screenshot")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="PNG path (default: in the workspace).")
@click.option("--height", type=click.IntRange(400, 20_000), default=6000, show_default=True,
              help="Browser window height in pixels: the page below it is not captured.")  # fmt: skip
@click.pass_obj
def screenshot_cmd(obj: Ctx, out: Path | None, height: int) -> None:
    """A PNG of the project dashboard as the Evidently UI shows it (headless Chromium, Debian's `chromium`)."""
    from monitoring.screenshot import screenshot

    path = obj.settings.workspace / "monitoring" / "evidently"
    if not path.exists():
        raise click.UsageError(f"no monitoring workspace at {path}: run `homefeed monitor run` first")
    try:
        written = screenshot(path, out or obj.settings.workspace / "monitoring" / "dashboard.png", height=height)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"dashboard: {written}")


def _log_dataset(spec: str, out: Path) -> tuple[Path, int]:
    """The dataset a `log:` source reads as (components/stream/offline_log.py `to_dataset`), rewritten at `out`, and
    the log's first event time: windows (current and reference) start no earlier, so the catalog's history, served
    by another policy, is context for the sequences and never a window of its own."""
    import pyarrow.compute as pc

    from components.stream.offline_log import OfflineEventLog, parse_log_source, to_dataset

    try:
        log_dir, catalog = parse_log_source(spec.removeprefix("log:"))
        if out.exists():
            shutil.rmtree(out)
        to_dataset(log_dir, catalog, out)
    except (ValueError, FileNotFoundError) as exc:
        raise click.UsageError(f"--dataset {spec}: {exc}") from exc
    return out, int(pc.min(OfflineEventLog(log_dir).read().column("ts")).as_py())


def _champion_ranking(registry_uri: str, cache: Path) -> Path:
    """The registry's champion's ranking model, fetched into `cache/v<N>` the first time that version is asked for
    (the folder's name changes with the champion, so the trigger policy sees a new model and takes a new baseline)."""
    from components.registry import Registry
    from components.release import MODEL_NAME

    registry = Registry(registry_uri)
    champion = registry.champion(MODEL_NAME)
    if champion is None:
        raise click.UsageError(f"the registry {registry_uri} has no champion yet: deploy a model first")
    folder = cache / f"v{champion.version}"
    if not (folder / "ranking").is_dir():
        tmp = cache / f".v{champion.version}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        registry.fetch(MODEL_NAME, champion.version, tmp, only=("ranking",))
        tmp.replace(folder)
    return folder / "ranking"


def _retraining(obj: Ctx, host: str | None, overrides: tuple[str, ...]):
    """The function the policy calls to start homefeed_retraining (returns the run id): on the KFP API at `host`,
    or here with kfp.local. Its parameters are the settings' with `overrides`, validated now."""
    from homefeed.pipeline_commands import cluster_package, pipeline_params
    from pipelines.local import local_defaults, run_local

    name = "homefeed_retraining"
    if host:
        from pipelines import remote

        params, package = cluster_package(obj, name, overrides)

        def submit(decision: dict) -> str:
            try:
                run = remote.submit(
                    remote.client(host), package, params, experiment="homefeed", run_name=f"{name}-drift"
                )
            except (RuntimeError, ValueError) as exc:  # the window stays unrecorded, so running again retries it
                raise click.ClickException(f"the retraining was not submitted to {host}: {exc}") from exc
            return run["run_id"]

        return submit
    params = local_defaults(pipeline_params(obj.settings.pipeline, None, overrides), obj.settings.workspace)

    def run_here(decision: dict) -> str:
        try:
            return run_local(params, obj.settings.runs_dir, name=name).run_id
        except RuntimeError as exc:
            raise click.ClickException(f"the local retraining failed: {exc}") from exc

    return run_here


def _table(has_model: bool) -> Table:
    table = Table(title="monitoring: each day against the days before it (all / core / non-core users)")
    columns = ["window end", "impressions", "repin", "click", "hide"] + (["HIT@3 repin"] if has_model else [])
    for col in [*columns, "drifted"]:
        table.add_column(col, justify="left" if col in ("window end", "drifted") else "right")
    return table


def _add_row(table: Table, label: str, summary: dict, has_model: bool) -> None:
    from monitoring.job import grouped

    def rate(column: str) -> str:
        parts = [summary["mean"].get(grouped(column, g)) for g in ("all", "core", "non-core")]
        return " / ".join("-" if p is None else f"{p:.4f}" for p in parts)

    drifted = sorted(c for c, d in summary["drift"].items() if d["detected"])
    row = [label, f"{summary['windows']['current']['impressions']:,}", rate("repin"), rate("click"), rate("hide")]
    if has_model:
        row.append(rate("top3_repin"))
    table.add_row(*row, ", ".join(drifted) or "none")
