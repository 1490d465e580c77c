"""`homefeed pipeline compile|run` and `homefeed drift`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from homefeed.context import Ctx, console
from pipelines.params import PipelineParams


@click.group()
def pipeline() -> None:
    """Compile or run the homefeed_training Kubeflow pipeline."""


@pipeline.command("compile")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the IR YAML.")
@click.option("--golden", is_flag=True, help="Rewrite the committed golden file (review its diff).")
@click.pass_obj
def compile_cmd(obj: Ctx, out: Path | None, golden: bool) -> None:
    """Compile homefeed_training to IR YAML for a Kubeflow Pipelines cluster."""
    from pipelines.compile import GOLDEN, compile_pipeline

    target = GOLDEN if golden else out or obj.settings.workspace / "pipelines" / "homefeed_training.yaml"
    console.print(f"[bold green]compiled[/] homefeed_training to {compile_pipeline(target)}")


@pipeline.command("run")
@click.option("--local", "run_local_", is_flag=True, help="Run on this machine with kfp.local (required for now).")
@click.option("--source", help="world:<preset>, movielens:<folder> or sequences:<file>.")
@click.option("--set", "overrides", multiple=True, metavar="NAME=VALUE", help="Override a pipeline parameter.")
@click.pass_obj
def run_cmd(obj: Ctx, run_local_: bool, source: str | None, overrides: tuple[str, ...]) -> None:
    """Run homefeed_training; artifacts land in a versioned directory under <workspace>/runs."""
    if not run_local_:
        raise click.UsageError("only local runs exist so far: pass --local (cluster submission comes with F7)")
    params = pipeline_params(obj.settings.pipeline, source, overrides)
    run = run_pipeline(params, obj.settings.runs_dir)
    console.print(metrics_table(run.artifacts["metrics"]["metadata"]))
    console.print(f"artifacts: {run.run_dir} (run.json lists each output)")


def pipeline_params(base: PipelineParams, source: str | None, overrides: tuple[str, ...]) -> dict:
    """The settings' parameters with --source and each NAME=VALUE applied, validated as PipelineParams."""
    data = base.model_dump()
    if source:
        data["source"] = source
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in data:
            raise click.UsageError(f"--set {item!r}: expected NAME=VALUE with NAME one of {', '.join(data)}")
        data[name] = value
    try:
        return PipelineParams(**data).model_dump()
    except ValidationError as exc:
        raise click.UsageError(f"invalid pipeline parameters: {exc}") from exc


def run_pipeline(params: dict, runs_dir: Path):
    """Run the pipeline locally, one line per finished step, and return the LocalRun."""
    from pipelines.local import run_local

    # kfp.local's output is redirected into the run's log while it runs, and a Console without a file of its own
    # writes to whatever sys.stdout is at the time: this one keeps writing to the terminal
    out = Console(file=sys.stdout)
    out.print(f"[bold]homefeed_training[/] on {params['source']} (logs: {runs_dir}/<run>/pipeline.log)")
    status = out.status("starting")

    def started(name: str) -> None:
        status.update(f"running [cyan]{name}[/]")

    def finished(step) -> None:
        mark = "[green]✓[/]" if step.status == "SUCCESS" else "[red]✗[/]"
        out.print(f"  {mark} {step.name:<16} {step.seconds:>7.1f} s")

    with status:
        try:
            run = run_local(params, runs_dir, on_step=finished, on_start=started)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from exc
    out.print(f"[bold green]pipeline succeeded[/] in {run.seconds:.1f} s: run {run.run_id}")
    return run


def metrics_table(metrics: dict) -> Table:
    """The evaluation's figures, each next to its baseline."""
    table = Table(title="offline evaluation (holdout)")
    for col in ("metric", "model", "baseline", "baseline is"):
        table.add_column(col, justify="left" if col in ("metric", "baseline is") else "right")
    for name in sorted(k for k in metrics if not k.endswith(("_random", "_popularity"))):
        kind, base = ("popularity", f"{name}_popularity") if name.startswith("recall") else ("random", f"{name}_random")
        table.add_row(name, f"{metrics[name]:.3f}", f"{metrics.get(base, float('nan')):.3f}", kind)
    return table


@click.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="A pipeline run directory.")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path), help="A dataset directory.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report directory.")
@click.option("--reference-days", type=float, help="Reference window (days before the current window).")
@click.option("--current-days", type=float, help="Current window (the last days of events).")
@click.pass_obj
def drift(obj: Ctx, run_dir, dataset, out, reference_days, current_days) -> None:
    """Evidently report of engagement rates (repin, click, hide per impression): latest window vs reference."""
    from components.steps import engagement_drift
    from pipelines.local import load_run

    if dataset is None:
        try:
            dataset = load_run(run_dir or obj.settings.runs_dir).path("dataset")
        except FileNotFoundError as exc:
            raise click.UsageError(f"{exc}; or pass --dataset") from exc
    p = obj.settings.pipeline
    out = out or obj.settings.workspace / "reports" / f"drift-{Path(dataset).name}"
    try:
        summary = engagement_drift(dataset, out, reference_days or p.reference_days, current_days or p.current_days)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    console.print(drift_table(summary))
    console.print(f"report: {summary['html']}\n        {summary['json']}")


def drift_table(summary: dict) -> Table:
    w = summary["windows"]
    table = Table(
        title=f"engagement drift: {w['current']['impressions']:,} current vs {w['reference']['impressions']:,} "
        "reference impressions"
    )
    for col in ("action", "reference rate", "current rate", "change", "drift score", "drift"):
        table.add_column(col, justify="left" if col == "action" else "right")
    for action, v in summary["actions"].items():
        table.add_row(
            action,
            f"{v['reference_rate']:.4f}",
            f"{v['current_rate']:.4f}",
            f"{v['relative_change']:+.1%}",
            f"{v['drift_score']:.3g}",
            "[red]yes[/]" if v["drift_detected"] else "no",
        )
    return table
