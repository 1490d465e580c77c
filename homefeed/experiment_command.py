"""`homefeed experiment`: a two-arm (or more) online experiment on a simulated world, served by real predictors."""

from __future__ import annotations

from pathlib import Path

import click

from homefeed.context import Ctx, console


def _arm(value: str) -> tuple[str, str]:
    name, sep, kind = value.partition("=")
    if not sep or not name or not kind:
        raise click.BadParameter(f"expected NAME=SEQUENCE (e.g. treatment=transact_v11), got {value!r}")
    return name, kind


@click.command("experiment")
@click.option("--world", "world_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A simulated world (`homefeed simulate` output): its users act by its ground truth.")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the models, logs and report go (default: <workspace>/experiments/<world name>).")  # fmt: skip
@click.option("--arm", "arms", multiple=True, metavar="NAME=SEQUENCE",
              help="An arm and its ranking model's sequence module; the first is the control. "
              "Default: control=none treatment=transact_v11.")  # fmt: skip
@click.option("--design", type=click.Choice(["paired", "split"]), default="paired", show_default=True,
              help="paired: every user is served by every arm, each from its own online store, on the same visits "
              "and draws (a simulator's counterfactual); split: each user sees one arm (a live A/B test).")  # fmt: skip
@click.option("--days", type=click.IntRange(min=1), default=3, show_default=True, help="Simulated days.")
@click.option("--users-per-arm", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--feed-size", type=click.IntRange(min=1, max=200), default=10, show_default=True, help="Pins per page.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def experiment(obj: Ctx, world_dir, out_dir, arms, design, days, users_per_arm, feed_size, seed) -> None:
    """Train (or reuse) one ranking model per arm on the world's history, then let the world's users open their
    homefeeds for DAYS simulated days: each arm serves through its own ranking and homefeed servers, users act on
    what they see by the ground truth, and their actions flow back through the stream processor into the online
    features before their next page. Writes the logs and a report with confidence intervals (report.md/json)."""
    from homefeed.experiment import arms as arms_
    from homefeed.experiment.engine import world_of
    from homefeed.experiment.report import markdown
    from homefeed.experiment.run import run_ab

    try:
        world_of(world_dir)  # a clear error now for a dataset without ground truth, before any training
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    chosen = dict(_arm(a) for a in arms) if arms else arms_.DEFAULT_ARMS
    if len(chosen) < 2:
        raise click.UsageError("an experiment needs at least two arms (--arm NAME=SEQUENCE, twice or more)")
    out_dir = out_dir or obj.settings.workspace / "experiments" / Path(world_dir).name

    with console.status("serving the experiment") as status:

        def progress(done: int, total: int) -> None:
            status.update(f"serving the experiment: batch {done}/{total}")

        result = run_ab(world_dir, out_dir, chosen, days=days, users_per_arm=users_per_arm, design=design, feed_size=feed_size,
                        seed=seed, log=console.print, progress=progress)  # fmt: skip
    summary, paths = result["summary"], result["paths"]
    console.print(markdown(result["report"]))
    console.print(f"{summary['pages']} pages, {summary['events']} events in {summary['seconds']} s")
    console.print(f"report: {paths['markdown']} and {paths['json']}; forest plot: {paths['plot']}")
