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


def server_args(kind: str, run, candidates: int, retrieval_url: str = "", ranking_url: str = "") -> list[str]:
    """`python -m serving` arguments (without --http-port) for `kind` on `run`'s artifacts."""
    if kind == "retrieval":
        return [
            "retrieval",
            "--model-dir",
            str(run.path("retrieval_model")),
            "--features-dir",
            str(run.path("feature_store")),
            "--index-dir",
            str(run.path("pin_index")),
        ]
    if kind == "ranking":
        return [
            "ranking",
            "--model-dir",
            str(run.path("ranking_model")),
            "--features-dir",
            str(run.path("feature_store")),
        ]
    if kind == "homefeed":
        return [
            "homefeed",
            "--retrieval-url",
            retrieval_url,
            "--ranking-url",
            ranking_url,
            "--candidates",
            str(candidates),
        ]
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def server_specs(run, candidates: int) -> list:
    """The three servers of a run for serving.launcher, the homefeed entry pointed at the other two."""
    from serving.launcher import ServerSpec

    return [
        ServerSpec("retrieval", server_args("retrieval", run, candidates)),
        ServerSpec("ranking", server_args("ranking", run, candidates)),
        ServerSpec("homefeed", server_args("homefeed", run, candidates, "{retrieval}", "{ranking}")),
    ]


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
        run = load_run(run_dir or obj.settings.runs_dir) if kind != "homefeed" else None
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    urls = {k: f"http://{s.host}:{getattr(s, f'{k}_port')}" for k in KINDS}
    args = server_args(kind, run, s.candidates, urls["retrieval"], urls["ranking"])
    port = port or getattr(s, f"{kind}_port")
    console.print(f"serving [bold]{kind}[/] at http://{s.host}:{port}/v1/models/{kind}:predict (Ctrl-C stops it)")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "serving", *args, "--http-port", str(port)])
