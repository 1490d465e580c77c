"""`homefeed ui`: the homefeed page for ML engineers, on a pipeline run's artifacts (serving/ui).

It copies the run's feature repository to a working folder (the page's actions are pushed into the copy's online
store, never the run's), starts the retrieval and ranking servers on it, and serves the page with uvicorn until
Ctrl-C; the servers stop with it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click

from homefeed.context import Ctx, console

_DIR = click.Path(file_okay=False, path_type=Path)


@click.command()
@click.option("--run", "run_dir", type=_DIR, help="Pipeline run directory (default: the latest run).")
@click.option("--dataset", type=_DIR, help="Dataset directory (with --features, --retrieval, --ranking, --index).")
@click.option("--features", type=_DIR, help="Feature repository (the `features` step's output).")
@click.option("--retrieval", type=_DIR, help="Retrieval model directory.")
@click.option("--ranking", type=_DIR, help="Ranking model directory.")
@click.option("--index", type=_DIR, help="Pin index directory.")
@click.option("--retrieval-url", help="A running retrieval server (with --ranking-url) instead of starting one.")
@click.option("--ranking-url", help="A running ranking server (with --retrieval-url) instead of starting one.")
@click.option(
    "--homefeed-url", help="A deployment's homefeed predictor: the page shows its feeds (impressions logged)."
)
@click.option("--actions-url", help="A deployment's actions service: the page's actions go there, not in-process.")
@click.option("--dashboard-url", default="http://127.0.0.1:8000", show_default=True,
              help="The drift dashboard (`homefeed monitor ui`).")  # fmt: skip
@click.option("--experiments", type=_DIR, help="Experiments folder (default: <workspace>/experiments).")
@click.option("--work-dir", type=_DIR, help="Working folder for the copies and logs (default: a temporary one).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--allowed-host", "allowed_hosts", multiple=True,
              help="Another Host name the page answers to (repeatable); localhost and --host are always allowed.")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=8503, show_default=True)
@click.pass_obj
def ui(obj: Ctx, run_dir, dataset, features, retrieval, ranking, index, retrieval_url, ranking_url, homefeed_url,
       actions_url, dashboard_url, experiments, work_dir, host, allowed_hosts, port) -> None:  # fmt: skip
    """Serve the homefeed page: a user's interests and realtime sequence, retrieval's candidates by source, the ranked
    feed with per-head scores, and repin/hide buttons whose actions stream into the online store.

    On a deployment (--retrieval-url, --ranking-url, --homefeed-url, --actions-url and its feature repository), the
    page is one more client of it: its feeds are the homefeed predictor's, its actions go to the actions service."""
    import uvicorn

    from components.cluster.launcher import ServerFailed
    from homefeed.ui.app import LOCAL_HOSTS
    from homefeed.ui.stack import REQUIRED, ui_app

    given = {"dataset": dataset, "features": features, "retrieval": retrieval, "ranking": ranking, "index": index}
    artifacts = _artifacts(obj, run_dir, given)
    if (retrieval_url is None) != (ranking_url is None):
        raise click.UsageError("give both --retrieval-url and --ranking-url, or neither")
    missing = artifacts.missing(("dataset", "features") if retrieval_url else tuple(REQUIRED))
    if missing:
        raise click.UsageError(f"the artifacts lack what the page needs: {'; '.join(missing)}")
    experiments = experiments or obj.settings.workspace / "experiments"
    with _working_folder(work_dir) as work:
        console.print(f"copying the feature repository to {work}; starting the model servers")
        try:
            hosts = [*LOCAL_HOSTS, *allowed_hosts, *([host] if host not in ("0.0.0.0", "::") else [])]
            with ui_app(artifacts, work, dashboard_url, experiments, retrieval_url, ranking_url,
                        homefeed_url=homefeed_url, actions_url=actions_url, allowed_hosts=hosts) as app:  # fmt: skip
                if retrieval_url and not actions_url:
                    console.print(
                        "[yellow]note[/]: servers started elsewhere read their own online store: the page's "
                        f"actions go to {work / 'features'}, so their feeds will not respond to them"
                    )
                console.print(f"homefeed page on [bold]http://{host}:{port}[/] (Ctrl-C stops it and the servers)")
                _exit_on_sigterm()
                uvicorn.run(app, host=host, port=port, log_level="warning")
        except FileExistsError as exc:
            raise click.UsageError(f"{exc}; pass another --work-dir") from exc
        except ServerFailed as exc:
            raise click.ClickException(str(exc)) from exc


def _exit_on_sigterm() -> None:
    """uvicorn shuts down on SIGTERM and then raises the signal again under the handler that was there before; with
    Python's default one that kills the process before the model servers are stopped, so exit like Ctrl-C instead."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


@contextlib.contextmanager
def _working_folder(work_dir: Path | None) -> Iterator[Path]:
    """`work_dir` (kept afterwards, with the servers' logs), else a temporary folder removed at the end."""
    if work_dir is not None:
        yield work_dir
        return
    with tempfile.TemporaryDirectory(prefix="homefeed-ui-") as tmp:
        yield Path(tmp)


def _artifacts(obj: Ctx, run_dir: Path | None, given: dict[str, Path | None]):
    """The five artifact directories, from the explicit options (all of them) or a run; a UsageError names what is
    missing."""
    from homefeed.ui.stack import Artifacts
    from pipelines.local import load_run

    named = [k for k, v in given.items() if v is not None]
    if named and run_dir is not None:
        raise click.UsageError(f"give --run or the artifact directories ({', '.join(named)}), not both")
    if named:
        absent = [f"--{k}" for k, v in given.items() if v is None]
        if absent:
            raise click.UsageError(f"without --run, every artifact directory is needed: missing {', '.join(absent)}")
        return Artifacts(**given)
    try:
        run = load_run(run_dir or obj.settings.runs_dir)
        return Artifacts.of_run(run)
    except (FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)  # a KeyError's str() is quoted
        raise click.UsageError(f"{message}; or pass --dataset --features --retrieval --ranking --index") from exc
