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

PIPELINE_NAMES = ("homefeed_training", "homefeed_retraining", "embedding_refresh")
RETRAIN_CRON = "0 0 3 * * 1,4"  # KFP cron, seconds first: 03:00 on Mondays and Thursdays (seed 003: twice a week)
_pipeline_option = click.option(
    "--pipeline", "name", type=click.Choice(PIPELINE_NAMES), default="homefeed_training", show_default=True
)
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="NAME=VALUE", help="Override a pipeline parameter."
)


@click.group()
def pipeline() -> None:
    """Compile, run, submit or schedule the Kubeflow pipelines."""


@pipeline.command("compile")
@_pipeline_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the IR YAML.")
@click.option("--golden", is_flag=True, help="Rewrite every pipeline's committed golden file (review the diff).")
@click.pass_obj
def compile_cmd(obj: Ctx, name: str, out: Path | None, golden: bool) -> None:
    """Compile a pipeline to IR YAML for a Kubeflow Pipelines cluster."""
    from pipelines.compile import compile_pipeline
    from pipelines.compile import golden as golden_path

    targets = {n: golden_path(n) for n in PIPELINE_NAMES} if golden else {
        name: out or obj.settings.workspace / "pipelines" / f"{name}.yaml"
    }  # fmt: skip
    for n, target in targets.items():
        console.print(f"[bold green]compiled[/] {n} to {compile_pipeline(target, n)}")


@pipeline.command("run")
@click.option(
    "--local", "run_local_", is_flag=True, help="Run on this machine with kfp.local (`submit` for a cluster)."
)
@click.option(
    "--in-process", is_flag=True,
    help="Run every step in this process (kfp.local's orchestration, no Python start per step): quicker, less isolated.",
)  # fmt: skip
@_pipeline_option
@click.option("--source", help="world:<preset>, movielens:<folder>, sequences:<file> or log:<dir>?catalog=<dataset>.")
@set_option
@click.pass_obj
def run_cmd(
    obj: Ctx, run_local_: bool, in_process: bool, name: str, source: str | None, overrides: tuple[str, ...]
) -> None:
    """Run a pipeline locally; artifacts land in a versioned directory under <workspace>/runs. A model that passes the
    gate is registered under <workspace>/registry and served by local model servers (unless deploy_target says
    otherwise)."""
    from pipelines.local import local_defaults

    if not run_local_:
        raise click.UsageError("pass --local to run here, or use `homefeed pipeline submit --host URL` for a cluster")
    params = local_defaults(pipeline_params(obj.settings.pipeline, source, overrides), obj.settings.workspace)
    run = run_pipeline(params, obj.settings.runs_dir, name, in_process=in_process)
    if "metrics" in run.artifacts:
        console.print(metrics_table(run.artifacts["metrics"]["metadata"]))
    if "decision" in run.artifacts:
        console.print(decision_line(run.artifacts["decision"]["metadata"]))
    if "deployment" in run.artifacts:
        console.print(deployment_line(run.artifacts["deployment"]["metadata"]))
    console.print(f"artifacts: {run.run_dir} (run.json lists each output)")


def deployment_line(meta: dict) -> str:
    """Where the deployed version now serves (the deploy artifact's metadata)."""
    from components.cluster.local_deployment import read_state
    from components.release import DeployTarget

    target = DeployTarget.parse(meta["target"])
    line = f"deployed: registry version {meta['version']} to {meta['target']}"
    state = read_state(target.where) if target.kind == "local" else None
    if state and state["status"] == "serving":
        line += f"; homefeed at {state['servers']['homefeed']['url']} (`homefeed deployment --stop` stops it)"
    return line


@pipeline.command("submit")
@click.option("--host", required=True, help="The Kubeflow Pipelines API, e.g. http://ml-pipeline-ui.kubeflow:80.")
@_pipeline_option
@click.option("--experiment", default="homefeed", show_default=True)
@click.option("--namespace", help="Kubeflow profile namespace (multi-user installs).")
@set_option
@click.pass_obj
def submit_cmd(obj: Ctx, host: str, name: str, experiment: str, namespace: str | None, overrides) -> None:
    """Submit one run of a pipeline to a Kubeflow Pipelines cluster (kfp.Client)."""
    from pipelines import remote

    params, package = cluster_package(obj, name, overrides)
    try:
        run = remote.submit(remote.client(host, namespace), package, params, experiment=experiment, run_name=name)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"[bold green]submitted[/] {name} to {host}: {run}")


@pipeline.command("schedule")
@click.option("--host", required=True, help="The Kubeflow Pipelines API, e.g. http://ml-pipeline-ui.kubeflow:80.")
@click.option("--pipeline", "name", type=click.Choice(PIPELINE_NAMES), default="homefeed_retraining", show_default=True)
@click.option("--cron", default=RETRAIN_CRON, show_default=True, help="KFP cron (6 fields, seconds first).")
@click.option("--experiment", default="homefeed", show_default=True)
@click.option("--namespace", help="Kubeflow profile namespace (multi-user installs).")
@set_option
@click.pass_obj
def schedule_cmd(obj: Ctx, host: str, name: str, cron: str, experiment: str, namespace: str | None, overrides) -> None:
    """Create a recurring run (default: homefeed_retraining twice a week) on a Kubeflow Pipelines cluster."""
    from pipelines import remote

    params, package = cluster_package(obj, name, overrides)
    try:
        job = remote.schedule(
            remote.client(host, namespace), package, params, name=f"{name}-recurring", cron=cron, experiment=experiment
        )
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"[bold green]scheduled[/] {name} on {host} ({cron}): {job}")


def cluster_package(obj: Ctx, name: str, overrides: tuple[str, ...]) -> tuple[dict, Path]:
    """The validated parameters of a cluster run and the compiled package; a cluster run must name its registry
    and deploy target (local paths mean nothing to its pods)."""
    from pipelines.compile import compile_pipeline, parameter_names

    params = pipeline_params(obj.settings.pipeline, None, overrides)
    params = {k: v for k, v in params.items() if k in parameter_names(name)}
    missing = [k for k in ("registry", "deploy_target") if k in params and not params[k]]
    if missing:
        raise click.UsageError(
            f"a cluster run needs {' and '.join(missing)}: e.g. --set registry=s3://models/homefeed "
            "--set deploy_target=kserve:homefeed (or set them under `pipeline:` in the settings)"
        )
    return params, compile_pipeline(obj.settings.workspace / "pipelines" / f"{name}.yaml", name)


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


def run_pipeline(params: dict, runs_dir: Path, name: str = "homefeed_training", in_process: bool = False):
    """Run pipeline `name` locally, one line per finished step, and return the LocalRun."""
    from pipelines.local import run_local

    # kfp.local's output is redirected into the run's log while it runs, and a Console without a file of its own
    # writes to whatever sys.stdout is at the time: this one keeps writing to the terminal
    out = Console(file=sys.stdout)
    out.print(f"[bold]{name}[/] on {params['source']} (logs: {runs_dir}/<run>/pipeline.log)")
    status = out.status("starting")

    def started(name: str) -> None:
        status.update(f"running [cyan]{name}[/]")

    def finished(step) -> None:
        mark = "[green]✓[/]" if step.status == "SUCCESS" else "[red]✗[/]"
        out.print(f"  {mark} {step.name:<16} {step.seconds:>7.1f} s")

    with status:
        try:
            run = run_local(params, runs_dir, on_step=finished, on_start=started, name=name, in_process=in_process)
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


def decision_line(meta: dict) -> str:
    """The gate's verdict in one line (the decision artifact's metadata)."""
    champion = f"champion v{meta['champion_version']}" if meta.get("champion_version") else "no champion yet"
    colour = "green" if meta.get("deploy") else "yellow"
    return f"gate: [{colour}]{meta.get('verdict', '?')}[/] ({champion}; compared on {meta.get('basis', '?')})"


@click.command()
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="A pipeline run directory.")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path), help="A dataset directory.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report directory.")
@click.option("--reference-days", type=float, help="Reference window (days before the current window).")
@click.option("--current-days", type=float, help="Current window (the last days of events).")
@click.pass_obj
def drift(obj: Ctx, run_dir, dataset, out, reference_days, current_days) -> None:
    """Evidently report of engagement rates (repin, click, hide per impression): latest window vs reference."""
    from monitoring.drift import engagement_drift
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
    """A monitoring-job summary (monitoring.job.run_window) as a table: per action, the reference and current rate
    overall and per group (with its current impressions), the relative change, and the two-proportion z-test's
    p-value and verdict; the caption lists the other distributions whose drift test failed."""
    from monitoring.drift import engagement_changes
    from monitoring.job import GROUPS

    w, by_group = summary["windows"], summary.get("impressions_by_group", {})
    table = Table(
        title=f"engagement drift: {w['current']['impressions']:,} current vs {w['reference']['impressions']:,} "
        "reference impressions"
    )
    for col in ("action", "users", "reference rate", "current rate", "change", "z-test p", "drift"):
        table.add_column(col, justify="left" if col in ("action", "users") else "right")
    changes = {group: engagement_changes(summary, group) for group in GROUPS if group == "all" or by_group.get(group)}
    for action in changes["all"]:
        for group, per_action in changes.items():
            v = per_action[action]
            table.add_row(
                action if group == "all" else "",
                group if group == "all" else f"{group} ({by_group[group]:,})",
                _rate(v["reference_rate"]),
                _rate(v["current_rate"]),
                "-" if v["relative_change"] is None else f"{v['relative_change']:+.1%}",
                "-" if v["drift_score"] is None else f"{v['drift_score']:.3g}",
                "[red]yes[/]" if v["drift_detected"] else "no",
            )
    distributions = sorted(c for c, d in summary["drift"].items() if d["detected"] and "_flag" not in c)
    table.caption = f"drifted distributions: {', '.join(distributions) or 'none'}"
    return table


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
