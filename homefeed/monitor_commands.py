"""`homefeed monitor run|ui`: the monitoring job over a dataset's days, and the Evidently UI on its workspace."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.table import Table

from homefeed.context import Ctx, console


@click.group()
def monitor() -> None:
    """Engagement, feature and prediction drift per day, into an Evidently workspace (monitoring/)."""


@monitor.command("run")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="A pipeline run directory.")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path), help="A dataset directory.")
@click.option("--model", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Ranking model for prediction drift and HIT@3 (default: the run's).")  # fmt: skip
@click.option("--days", type=int, default=1, show_default=True, help="Monitor the last N days, one window each.")
@click.option("--reference-days", type=float, default=7.0, show_default=True, help="Reference before each window.")
@click.option("--max-requests", type=int, default=2_000, show_default=True, help="Requests scored per window.")
@click.option("--trigger", is_flag=True, help="Apply the trigger policy; retrain when it says so.")
@click.option("--dry-run", is_flag=True, help="With --trigger: record what would happen, submit nothing.")
@click.option(
    "--retrain-host", help="With --trigger: submit homefeed_retraining to this KFP API (default: run it here)."
)
@click.pass_obj
def run_cmd(obj: Ctx, run_dir, dataset, model, days, reference_days, max_requests, trigger, dry_run, retrain_host):
    """Monitor the dataset's last DAYS days: Evidently snapshots (HTML + JSON) into the workspace's project, and
    with --trigger the retraining policy over each window (decisions in <workspace>/monitoring/triggers.jsonl)."""
    from monitoring import trigger as policy_
    from monitoring.dashboard import open_project
    from monitoring.job import DAY_MS, Windows, dataset_end, run_window
    from pipelines.local import load_run

    if dataset is None:
        try:
            run = load_run(run_dir or obj.settings.runs_dir)
        except FileNotFoundError as exc:
            raise click.UsageError(f"{exc}; or pass --dataset") from exc
        dataset = run.path("dataset")
        model = model or (run.path("ranking_model") if "ranking_model" in run.artifacts else None)
    if days < 1:
        raise click.UsageError(f"--days must be at least 1, got {days}")
    root = obj.settings.workspace / "monitoring"
    workspace = open_project(root / "evidently")
    end = dataset_end(dataset)
    table = _table(model is not None)
    decisions: list[tuple[str, dict]] = []
    ends = [end - back * DAY_MS for back in range(days - 1, -1, -1)]
    seen = set(policy_.TriggerState.load(root).windows) & {str(e) for e in ends} if trigger else set()
    if seen:  # refused before any work: a window counted twice would skew its drift episode
        raise click.ClickException(
            f"{len(seen)} of these windows were already evaluated by the trigger policy "
            f"({root / policy_.STATE_FILE}); monitor new days, or run without --trigger"
        )
    for window_end in ends:
        windows = Windows.ending(window_end, reference_days=reference_days)
        try:
            summary = run_window(dataset, windows, root / "reports", model, workspace, max_requests)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        _add_row(table, windows.label, summary, model is not None)
        if trigger:
            try:
                decision = policy_.evaluate(
                    summary, policy_.TriggerPolicy.default(dry_run), root, lambda d: _retrain(obj, d, retrain_host)
                )
            except ValueError as exc:  # a window evaluated before: counting it twice would skew its episode
                raise click.ClickException(f"{exc} (trigger state: {root / policy_.STATE_FILE})") from exc
            decisions.append((windows.label, decision))
    console.print(table)
    for label, decision in decisions:
        mark = "[red]retrain[/]" if decision["trigger"] else "no retraining"
        extra = " (dry run: nothing submitted)" if decision["trigger"] and decision["dry_run"] else ""
        console.print(f"{label}: {mark}{extra} — {decision['why']}")
    console.print(f"report: {summary['html']}\nworkspace: {root / 'evidently'} (`homefeed monitor ui` to browse it)")


@monitor.command("ui")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.pass_obj
def ui_cmd(obj: Ctx, port: int, host: str) -> None:
    """Serve the Evidently UI on the monitoring workspace (its project dashboard shows every metric over time)."""
    from monitoring.dashboard import open_project

    path = obj.settings.workspace / "monitoring" / "evidently"
    open_project(path)  # the project and its dashboard exist even before the first job
    evidently = Path(sys.executable).with_name("evidently")
    args = [str(evidently), "ui", "--workspace", str(path), "--port", str(port), "--host", host]
    console.print(f"Evidently UI on http://{host}:{port} (workspace {path}); Ctrl-C stops it")
    os.execv(args[0], args)


def _retrain(obj: Ctx, decision: dict, host: str | None) -> str:
    """Start homefeed_retraining with the settings' parameters, here or on a KFP cluster; returns the run id."""
    from pipelines.local import local_defaults

    params = obj.settings.pipeline.model_dump()
    if host:
        from pipelines import remote
        from pipelines.compile import compile_pipeline, parameter_names

        name = "homefeed_retraining"
        package = compile_pipeline(obj.settings.workspace / "pipelines" / f"{name}.yaml", name)
        params = {k: v for k, v in params.items() if k in parameter_names(name)}
        run = remote.submit(remote.client(host), package, params, experiment="homefeed", run_name=f"{name}-drift")
        return run["run_id"]
    from pipelines.local import run_local

    run = run_local(local_defaults(params, obj.settings.workspace), obj.settings.runs_dir, name="homefeed_retraining")
    return run.run_id


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
