"""Rich output for the CLI: progress bars for long steps and tables for summaries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


@contextmanager
def progress_reporter(console: Console, stages: Sequence[str]) -> Iterator:
    """Yields report(stage, done, total) that drives one bar per stage."""
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as progress:
        tasks = {s: progress.add_task(s, total=None, start=False) for s in stages}

        def report(stage: str, done: int, total: int) -> None:
            task = tasks[stage]
            progress.start_task(task)
            progress.update(task, completed=done, total=total)

        yield report


def summary_tables(s: dict) -> list[Table]:
    overview = Table(title=f"dataset ({s['source']})", show_header=False)
    for k, v in s["rows"].items():
        overview.add_row(k, f"{v:,}" + (f"  ({s['rejected'][k]:,} rejected)" if s["rejected"].get(k) else ""))
    overview.add_row("requests", f"{s['requests']:,}")
    overview.add_row("span", f"{s['span_days']} days")
    for a, r in s["rate_per_impression"].items():
        overview.add_row(f"{a} / impression", "-" if r is None else f"{r:.2%}")
    sig = s["signatures"]
    overview.add_row("image signatures", f"{sig['pins']:,} pins, {sig['fine']:,} fine, {sig['coarse']:,} coarse")

    seg = Table(title="by segment")
    for col in ("segment", "users", "events/user/day", "click", "repin", "hide"):
        seg.add_column(col, justify="right" if col != "segment" else "left")
    for row in s["segments"]:
        seg.add_row(
            row["segment"],
            f"{row['users']:,}",
            _num(row["events_per_user_day"]),
            *(_pct(row[f"{a}_rate"]) for a in ("click", "repin", "hide")),
        )

    interests = Table(title="top interests by repins")
    for col in ("interest", "impression share", "repin share"):
        interests.add_column(col, justify="left" if col == "interest" else "right")
    for row in s["interests"]:
        interests.add_row(row["name"], _pct(row["impression_share"]), _pct(row["repin_share"]))
    return [overview, seg, interests]


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2%}"
