"""`homefeed serve retrieval|ranking|homefeed`: a model server on a pipeline run's artifacts, kept running.

The command resolves the run's artifact directories and becomes `python -m serving <kind> ...` (exec), the same
entry point the demo's launcher and a KServe custom-predictor container start, so there is one way a server starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from homefeed.context import Ctx, console

KINDS = ("retrieval", "ranking", "homefeed")


def server_specs(run, candidates: int) -> list:
    """The three servers on `run`'s artifacts (components.cluster.launcher specs; the homefeed's upstream URLs are placeholders
    `{retrieval}` and `{ranking}`)."""
    from components.cluster.launcher import homefeed_specs

    return homefeed_specs(
        run.path("retrieval_model"),
        run.path("ranking_model"),
        run.path("feature_store"),
        run.path("pin_index"),
        candidates,
    )


@click.command()
@click.argument("kind", type=click.Choice(KINDS))
@click.option(
    "--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="Run directory (default: latest)."
)
@click.option("--port", type=int, help="HTTP port (default: the settings' port for KIND).")
@click.pass_obj
def serve(obj: Ctx, kind: str, run_dir: Path | None, port: int | None) -> None:
    """Serve KIND on a pipeline run's artifacts until Ctrl-C (KServe ModelServer, REST v1 on PORT).

    The homefeed entry calls the retrieval and ranking servers at the settings' host and ports: start those first.
    """
    from pipelines.local import load_run

    s = obj.settings.serving
    try:
        run = load_run(run_dir or obj.settings.runs_dir)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    urls = {k: f"http://{s.host}:{getattr(s, f'{k}_port')}" for k in KINDS}
    spec = next(spec for spec in server_specs(run, s.candidates) if spec.name == kind)
    args = [a.format_map(urls) for a in spec.args]
    port = port or getattr(s, f"{kind}_port")
    console.print(f"serving [bold]{kind}[/] at http://{s.host}:{port}/v1/models/{kind}:predict (Ctrl-C stops it)")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "serving", *args, "--http-port", str(port)])


@click.command()
@click.option("--stop", is_flag=True, help="Stop the deployment's servers.")
@click.pass_obj
def deployment(obj: Ctx, stop: bool) -> None:
    """The local deployment that `homefeed pipeline run --local` keeps serving: its version and servers."""
    from components.cluster import local_deployment as local

    where = obj.settings.workspace / "serving"
    state = local.undeploy(where) if stop else local.read_state(where)
    if state is None:
        console.print(f"nothing deployed in {where}: run `homefeed pipeline run --local` first")
        return
    verb = "stopped" if stop and state["status"] == "serving" else state["status"]
    console.print(f"[bold]v{state['version']}[/] {verb} (deployed {state['deployed_at']}; bundle {state['bundle']})")
    for name, server in state["servers"].items():
        console.print(f"  {name:<10} {server['url']}  pid {server['pid']}  log {server['log']}")
