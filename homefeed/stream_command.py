"""`homefeed stream SOURCE --features DIR`: keep the realtime action sequences of a feature store up to date.

SOURCE is a parquet or JSON-lines file, or `-` for JSON lines on stdin. With --checkpoint the job resumes where its
last checkpoint left off, so after a crash the same command is simply run again. Changes are pushed every --batch
events or, at a low event rate, within --max-delay-ms of being read. With --metrics-port the job's Prometheus
metrics are served at http://HOST:PORT/metrics while it runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from homefeed.context import console


@click.command()
@click.argument("source")
@click.option(
    "--features", "features_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Feature store directory (a pipeline run's feature_store artifact).",
)  # fmt: skip
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint file (resume).")
@click.option("--batch", type=click.IntRange(min=1), default=1000, show_default=True, help="Events per push.")
@click.option(
    "--max-delay-ms", type=click.FloatRange(min=0), default=500.0, show_default=True,
    help="Push a change at the latest this long after it was read, even if --batch events have not arrived.",
)  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address the metrics server binds.")
@click.option("--dead-letter", type=click.Path(file_okay=False, path_type=Path), help="Dead-letter directory.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path), help="JSON summary file.")
def stream(
    source: str, features_dir: Path, checkpoint, batch: int, max_delay_ms: float, metrics_port, metrics_host: str,
    dead_letter, summary_path,
) -> None:  # fmt: skip
    """Consume events, validate them, keep each user's last 100 actions and push changed ones to the online store."""
    from feast import FeatureStore

    from components.data.contracts import DeadLetter
    from components.stream.processor import StreamProcessor

    dead_letter = dead_letter or (checkpoint.parent / "dead_letter" if checkpoint else features_dir / "dead_letter")
    if not (features_dir / "feature_store.yaml").is_file():
        raise click.UsageError(
            f"{features_dir} is not a feature store (no feature_store.yaml): pass a run's feature_store artifact "
            "(its path is under artifacts.feature_store in the run's run.json)"
        )
    store = FeatureStore(repo_path=str(features_dir.resolve()))
    proc = StreamProcessor(store, checkpoint, DeadLetter(dead_letter), batch=batch, max_delay_ms=max_delay_ms)
    if metrics_port is not None:
        port = proc.metrics.serve(metrics_port, metrics_host)
        console.print(f"metrics: http://{metrics_host}:{port}/metrics")
    if proc.offset:
        console.print(f"resuming at record {proc.offset} from {checkpoint}")
    try:
        summary = proc.run_source(source)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    if summary_path:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    console.print(_table(summary))
    if summary["counters"]["invalid"]:
        console.print(f"rejected records: {dead_letter}")


def _table(summary: dict) -> Table:
    table = Table(title="stream")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary["counters"].items():
        table.add_row(name, str(value))
    table.add_row("lag (events)", str(summary["lag"]["events"]))
    for q in ("p50", "p99"):
        value = summary["push_latency_ms"][q]
        table.add_row(f"push latency {q} (ms)", "-" if value is None else f"{value:.1f}")
    for q in ("p50", "p99"):
        value = summary["freshness_ms"][q]
        table.add_row(f"freshness {q} (ms)", "-" if value is None else f"{value:.1f}")
    return table
