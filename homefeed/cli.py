"""`homefeed`: the command line. Glue only: it loads settings, calls components, and prints what they produced."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from components.data import contracts
from components.data.dataset import Dataset, write_table
from components.data.sources import SourceError, read_rows
from components.data.summary import summarize
from components.data.world.config import PRESETS, SCENARIOS, preset_knobs
from homefeed.cluster_command import cluster
from homefeed.config import Settings
from homefeed.context import Ctx, console
from homefeed.eval_commands import eval_group
from homefeed.experiment_command import experiment
from homefeed.live_command import live
from homefeed.monitor_commands import monitor
from homefeed.pipeline_commands import drift, pipeline
from homefeed.render import progress_reporter, summary_tables
from homefeed.serve_commands import deployment, serve
from homefeed.stream_command import stream
from homefeed.ui_command import ui


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="YAML settings file.")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Homefeed: Pinterest-style retrieval and ranking on Kubeflow, Ray, Feast, Milvus, KServe and Evidently.

    Settings come from defaults, then a YAML file (--config, $HOMEFEED_CONFIG or ./homefeed.yaml), then
    HOMEFEED_* environment variables (nested with __, e.g. HOMEFEED_WORLD__SEED=3).
    """
    ctx.obj = Ctx(config)


@main.command()
@click.option(
    "--preset",
    help=f"World size ({', '.join(PRESETS)}; small = default), optionally with scenarios: "
    f"{'+'.join(['medium', *SCENARIOS])}.",
)
@click.option("--seed", type=int, help="Random seed; the same seed gives the same files.")
@click.option("--users", "n_users", type=int, help="Number of users.")
@click.option("--pins", "n_pins", type=int, help="Number of pins.")
@click.option("--events", "n_events", type=int, help="Target number of events.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output dataset directory.")
@click.pass_obj
def simulate(obj: Ctx, preset, seed, n_users, n_pins, n_events, out) -> None:
    """Generate a synthetic Homefeed world (users, pins, impressions, actions, ground truth)."""
    cfg = _world_config(obj.settings, preset, seed=seed, n_users=n_users, n_pins=n_pins, n_events=n_events)
    out = out or obj.settings.workspace / "datasets" / f"world-{preset or 'custom'}-seed{cfg.seed}"
    _simulate(cfg, out)


def _world_config(settings: Settings, preset: str | None, **overrides):
    from components.data.world.config import WorldConfig

    data = settings.world.model_dump()
    if preset:
        try:
            data.update(preset_knobs(preset))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--preset") from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return WorldConfig(**data)
    except ValidationError as exc:
        raise click.UsageError(f"invalid world settings: {exc}") from exc


def _simulate(cfg, out: Path) -> Path:
    from components.data.world.simulate import STAGES, simulate_world

    t0 = time.perf_counter()
    with progress_reporter(console, STAGES) as report:
        result = simulate_world(cfg, out, report)
    console.print(
        f"[bold green]world written[/] to {out} in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{v:,} {k}" for k, v in result.rows.items())
        + (f"; rejected {result.rejected}" if any(result.rejected.values()) else "")
    )
    return out


@main.group()
def ingest() -> None:
    """Convert a public dataset into the canonical contracts."""


@ingest.command("movielens")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output dataset directory.")
@click.pass_obj
def ingest_movielens_cmd(obj: Ctx, src: Path, out: Path | None) -> None:
    """MovieLens-100K folder (u.data, u.item, u.genre): rating >=4 repin, 3 click, <=2 hide."""
    from components.data.adapters.movielens import ingest_movielens

    out = out or obj.settings.workspace / "datasets" / "movielens-100k"
    with _unusable_source():
        result = ingest_movielens(src, out)
    _report_ingest(result, out)


@ingest.command("sequences")
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output dataset directory.")
@click.pass_obj
def ingest_sequences_cmd(obj: Ctx, src: Path, out: Path | None) -> None:
    """A SASRec/BERT4Rec 'user item' file (order only): each line a repin."""
    from components.data.adapters.sequences import ingest_sequences

    out = out or obj.settings.workspace / "datasets" / src.stem
    with _unusable_source():
        result = ingest_sequences(src, out)
    _report_ingest(result, out)


@contextmanager
def _unusable_source() -> Iterator[None]:
    """A source that cannot be used as a whole is one line for the user, not a traceback. Only these classes: any
    other error is a bug and keeps its traceback."""
    try:
        yield
    except (SourceError, FileNotFoundError, contracts.ContractError) as exc:
        raise click.ClickException(str(exc)) from exc


def _report_ingest(result, out: Path) -> None:
    manifest = Dataset(out).manifest()
    console.print(
        f"[bold green]dataset written[/] to {out}: " + ", ".join(f"{v:,} {k}" for k, v in result.rows.items())
    )
    rejected = {**manifest.get("raw_rejected", {}), **{k: v for k, v in result.rejected.items() if v}}
    if any(rejected.values()):
        duplicates = {k: v for k, v in result.duplicates.items() if v}
        console.print(
            f"[yellow]rejected rows[/] {rejected}"
            + (f" (duplicates of an earlier row: {duplicates})" if duplicates else "")
            + f": see {out / 'dead_letter'}"
        )


@main.command()
@click.argument("contract", type=click.Choice(sorted(contracts.CONTRACTS)))
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output directory.")
def validate(contract: str, src: Path, out: Path) -> None:
    """Check a parquet, CSV or JSON-lines file against a contract: valid rows to OUT/<contract>.parquet, the rest to
    OUT/dead_letter/<contract>.jsonl with the row, field and reason. A row repeating an earlier row's key is
    rejected as a duplicate. Exits 1 when any row was rejected, or when the file cannot be read at all."""
    try:
        data = read_rows(src)
        # the file is a whole table, so a repeated event is a duplicate (see contracts.EVENT)
        result = contracts.validate(data, contracts.CONTRACTS[contract], dedupe=True)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from exc
    except contracts.ContractError as exc:
        raise click.ClickException(f"{src}: {exc}") from exc
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / f"{contract}.parquet", result.valid)
    contracts.DeadLetter(out / "dead_letter").write(contract, result.rejects)
    if result.valid.num_rows == 0 and result.n_rejected == 0:
        # A header with no rows breaks no rule of the contract, and an export of a quiet hour is legitimately
        # empty: failing it would fail the pipeline that ships it. So it passes, but says so, since an empty file
        # is also what a broken export looks like; the typed, empty table is written for the next step to read.
        console.print(f"{src} has the {contract} columns but no rows: 0 valid, 0 rejected rows")
        return
    duplicates = f" ({result.duplicates:,} duplicates of an earlier row)" if result.duplicates else ""
    console.print(f"{result.valid.num_rows:,} valid, {result.n_rejected:,} rejected rows{duplicates}")
    for rej in result.rejects[:5]:
        console.print(f"  row {rej.row}: " + "; ".join(f"{e['field']}: {e['reason']}" for e in rej.errors))
    if result.n_rejected:
        console.print(f"[yellow]rejects written to[/] {out / 'dead_letter' / (contract + '.jsonl')}")
        sys.exit(1)


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def summary(dataset: Path, as_json: bool) -> None:
    """Describe a dataset: sizes, engagement rates, activity per segment, interest mix."""
    try:
        result = summarize(Dataset(dataset))
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for table in summary_tables(result):
            console.print(table)


@main.command("config")
@click.pass_obj
def show_config(obj: Ctx) -> None:
    """Print the effective settings (after YAML and environment) as YAML."""
    click.echo(yaml.safe_dump(obj.settings.model_dump(mode="json"), sort_keys=False))


@main.command()
@click.option("--source", help="world:<preset> (default: the settings' pipeline source, world:small) or a dataset.")
@click.pass_obj
def demo(obj: Ctx, source: str | None) -> None:
    """The whole loop: run the training pipeline locally, serve it, and show three users' homefeeds."""
    from homefeed.demo import run_demo

    settings = obj.settings
    if source:
        settings = settings.model_copy(update={"pipeline": settings.pipeline.model_copy(update={"source": source})})
    run_demo(settings, console)


main.add_command(pipeline)
main.add_command(drift)
main.add_command(serve)
main.add_command(deployment)
main.add_command(cluster)
main.add_command(monitor)
main.add_command(stream)
main.add_command(eval_group)
main.add_command(experiment)
main.add_command(ui)
main.add_command(live)

if __name__ == "__main__":
    main()
