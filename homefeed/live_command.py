"""`homefeed live`: a simulated world's users on a deployment, through its public HTTP endpoints only."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from homefeed.context import Ctx, console


@click.command("live")
@click.option("--world", "world_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The simulated world the deployment was trained on (`homefeed simulate` output, or a pipeline "
              "run's dataset artifact of a world:... source): its users act by its ground truth.")  # fmt: skip
@click.option("--homefeed", "homefeed_url", required=True,
              help="The homefeed predictor's base URL; started with --client-time, it logs at the users' clock.")  # fmt: skip
@click.option("--actions", "actions_url", required=True, help="The actions service's base URL.")
@click.option("--days", type=click.IntRange(min=1), default=1, show_default=True, help="Simulated days to serve.")
@click.option("--first-day", type=click.IntRange(min=0), default=0, show_default=True,
              help="Day of the run to start at (0: just after the world's history); a run can go on day by day.")  # fmt: skip
@click.option("--users", type=click.IntRange(min=1), help="A seeded sample of this many users (default: all).")
@click.option("--feed-size", type=click.IntRange(1, 200), default=10, show_default=True, help="Pins per page.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="What was served and sent, per day (default: <workspace>/live/<world name>).")  # fmt: skip
@click.pass_obj
def live(obj: Ctx, world_dir, homefeed_url, actions_url, days, first_day, users, feed_size, seed, out_dir) -> None:
    """Serve DAYS simulated days to the world's users through the deployment's public endpoints: each page is a
    homefeed request, each click, repin and hide a POST to the actions service (homefeed/live.py). The deployment
    logs, streams and stores the events itself; this command only plays the users."""
    from homefeed.experiment.engine import world_of
    from homefeed.live import EndpointError, PublicEndpoints, run_days

    try:
        world_of(world_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    out_dir = out_dir or obj.settings.workspace / "live" / Path(world_dir).name
    endpoints = PublicEndpoints(homefeed_url, actions_url)
    table = Table(title=f"live traffic on {homefeed_url} and {actions_url}")
    for column in ("day", "pages", "failed feeds", "impressions", "click", "repin", "hide", "retries"):
        table.add_column(column, justify="right")
    try:
        with console.status("serving") as status:

            def progress(day: int, done: int, total: int) -> None:
                status.update(f"day {day}: batch {done}/{total}")

            summaries = run_days(world_dir, endpoints, range(first_day, first_day + days), out_dir, users=users,
                                 feed_size=feed_size, seed=seed, progress=progress)  # fmt: skip
    except EndpointError as exc:
        raise click.ClickException(str(exc)) from exc
    except RuntimeError as exc:
        raise click.ClickException(f"the deployment stopped taking actions: {exc}") from exc
    finally:
        endpoints.close()
    for s in summaries:
        a = s["actions"]
        table.add_row(str(s["day"]), f"{s['pages']:,}", str(s["failed_feeds"]), f"{s['impressions']:,}",
                      str(a["click"]), str(a["repin"]), str(a["hide"]), str(s["retries"]))  # fmt: skip
    console.print(table)
    console.print(f"served and sent: {out_dir}")
