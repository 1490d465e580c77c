"""`homefeed stream SOURCE --features DIR`: keep the realtime action sequences of a feature store up to date.

SOURCE is a parquet or JSON-lines file, or `-` for JSON lines on stdin. With --checkpoint the job resumes where its
last checkpoint left off, so after a crash the same command is simply run again. Changes are pushed every --batch
events or, at a low event rate, within --max-delay-ms of being read. With --metrics-port the job's Prometheus
metrics are served at http://HOST:PORT/metrics while it runs.

With --follow, SOURCE is an append-only JSON-lines log read like `tail -f` (the embedded event bus): the job runs
until SIGTERM or SIGINT, then pushes what it holds, writes its checkpoint and exits 0. A `redis://HOST:PORT/DB` SOURCE
is the deployed event bus (components/stream/bus.py), always followed the same way: its shard streams are read as
consumer `--consumer` of a consumer group, and what is checkpointed is acknowledged.

A processor without a checkpoint of its own starts from every user's sequence as the features step's replay left it
(`<features>/stream/checkpoint.json`, which is what the online store holds), so events extend each user's history
instead of replacing it; an event the replay already applied is recognised as a duplicate. Without that file (a
cluster's `--features` is a ConfigMap) each user's online sequence is read before their first event, to the same end.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
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
@click.option(
    "--follow", is_flag=True,
    help="Read SOURCE, a JSON-lines log, like `tail -f` until SIGTERM/SIGINT (waits for it to appear if missing).",
)  # fmt: skip
@click.option(
    "--poll-ms", type=click.FloatRange(min=1), default=200.0, show_default=True,
    help="With --follow: how often to look for new lines at the end of the log.",
)  # fmt: skip
@click.option(
    "--event-log", type=click.Path(file_okay=False, path_type=Path),
    help="Append every valid event to this offline log (day-partitioned parquet), at each push.",
)  # fmt: skip
@click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path),
    help="With a redis:// SOURCE: run as one of several replicas that share the shards (leases in Redis); each "
    "shard's checkpoint and dead letter are kept here, on storage every replica sees.",
)  # fmt: skip
@click.option("--replica", default=None, help="With --state-dir: this replica's name (default: the host name).")
@click.option(
    "--consumer", default="processor-0", show_default=True,
    help="With a redis:// SOURCE: this processor's consumer name in the group; keep it stable across restarts.",
)  # fmt: skip
def stream(
    source: str, features_dir: Path, checkpoint, batch: int, max_delay_ms: float, metrics_port, metrics_host: str,
    dead_letter, summary_path, follow: bool, poll_ms: float, event_log, state_dir, replica, consumer: str,
) -> None:  # fmt: skip
    """Consume events, validate them, keep each user's last 100 actions and push changed ones to the online store."""
    from feast import FeatureStore

    from components.data.contracts import DeadLetter
    from components.stream.bus import BusUnavailable
    from components.stream.offline_log import OfflineEventLog
    from components.stream.processor import StreamProcessor
    from components.stream.sources import LogRotatedError, open_source

    dead_letter = dead_letter or (checkpoint.parent / "dead_letter" if checkpoint else features_dir / "dead_letter")
    if not (features_dir / "feature_store.yaml").is_file():
        raise click.UsageError(
            f"{features_dir} is not a feature store (no feature_store.yaml): pass a run's feature_store artifact "
            "(its path is under artifacts.feature_store in the run's run.json)"
        )
    if state_dir is not None:
        if not source.startswith(("redis://", "rediss://")):
            raise click.UsageError("--state-dir shares the shards of a redis:// event bus among replicas")
        if checkpoint is not None or summary_path is not None:
            raise click.UsageError(
                "with --state-dir each shard keeps its checkpoint there; --checkpoint and --summary are for a single "
                "processor"
            )
        _run_replica(source, features_dir, state_dir, replica, batch, max_delay_ms, poll_ms, event_log,
                     metrics_port, metrics_host)  # fmt: skip
        return
    store = FeatureStore(repo_path=str(features_dir.resolve()))
    offline = OfflineEventLog(event_log) if event_log else None
    proc = StreamProcessor(store, checkpoint, DeadLetter(dead_letter), batch=batch, max_delay_ms=max_delay_ms,
                           offline_log=offline, initial_state=_replayed(features_dir))  # fmt: skip
    if metrics_port is not None:
        port = proc.metrics.serve(metrics_port, metrics_host)
        console.print(f"metrics: http://{metrics_host}:{port}/metrics")
    if proc.offset:
        console.print(f"resuming at record {proc.offset} from {checkpoint}")
    stop = threading.Event()
    commit = position = None
    try:  # opened before running, so that only a bad SOURCE, not a failure while running, is a usage error
        if source.startswith(("redis://", "rediss://")):
            from components.stream.redis_source import RedisStreamSource

            follow = True
            bus = RedisStreamSource(source, consumer=consumer, block_ms=int(poll_ms), stop=stop)
            records, commit, position = bus.read(proc.offset, proc.source_position), bus.commit, bus.position
        else:
            records = open_source(source, proc.offset, follow=follow, stop=stop, poll_ms=poll_ms)
    except (FileNotFoundError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    except BusUnavailable as exc:
        raise click.ClickException(f"{exc}: is the event bus running?") from exc
    if follow:
        console.print(f"following {source} from record {proc.offset} until SIGTERM or SIGINT")
    with _stop_on_signals(stop) if follow else nullcontext([]) as received:
        try:
            # the end of a followed source is a stop signal: run's end-of-source push and checkpoint are the shutdown
            summary = proc.run(records, commit, position)
        except LogRotatedError as exc:
            raise click.ClickException(str(exc)) from exc
    if received:
        console.print(f"stopped by {received[0]}: pushed and checkpointed up to record {proc.offset}")
    if summary_path:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    console.print(_table(summary))
    if summary["counters"]["invalid"]:
        console.print(f"rejected records: {dead_letter}")


def _run_replica(source: str, features_dir: Path, state_dir: Path, replica: str | None, batch: int,
                 max_delay_ms: float, poll_ms: float, event_log: Path | None, metrics_port: int | None,
                 metrics_host: str) -> None:  # fmt: skip
    """One replica of a sharded processor (components/stream/shards.py) until SIGTERM or SIGINT; with
    `metrics_port`, its shards' metrics at /metrics, labelled by shard."""
    import socket

    from feast import FeatureStore

    from components.data.contracts import DeadLetter
    from components.stream.offline_log import OfflineEventLog
    from components.stream.processor import StreamProcessor
    from components.stream.shards import ShardedProcessor

    def make_processor(shard: int, folder: Path) -> StreamProcessor:
        store = FeatureStore(repo_path=str(features_dir.resolve()))  # a client per shard: each runs in its thread
        offline = OfflineEventLog(event_log, name=f"s{shard}") if event_log else None
        return StreamProcessor(store, folder / "checkpoint.json", DeadLetter(folder / "dead_letter"), batch=batch,
                               max_delay_ms=max_delay_ms, offline_log=offline,
                               initial_state=_replayed(features_dir))  # fmt: skip

    stop = threading.Event()
    name = replica or socket.gethostname()
    runner = ShardedProcessor(source, name, state_dir, make_processor, block_ms=int(poll_ms), stop=stop)
    if metrics_port is not None:
        from components.stream.metrics import serve_shards

        port = serve_shards(runner.metrics, metrics_port, metrics_host)
        click.echo(f"metrics: http://{metrics_host}:{port}/metrics")
    click.echo(f"replica {name}: sharing the shards of {source} until SIGTERM or SIGINT")
    with _stop_on_signals(stop) as received:
        finished = runner.run()
    click.echo(f"stopped by {received[0] if received else 'the end'}: shards run here {sorted(finished)}")


def _replayed(features_dir: Path) -> Path:
    """The features step's replay checkpoint: the sequences a processor without a checkpoint of its own starts from
    (StreamProcessor `initial_state`), so that live events extend every user's history rather than replace it."""
    from components.stream.replay import CHECKPOINT

    return features_dir / "stream" / CHECKPOINT


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """Set `stop` on the first SIGTERM (what Kubernetes sends at pod shutdown) or SIGINT; yields the names of the
    signals received. The first signal restores the previous handlers, so a second one kills at once if the final
    push hangs (Kubernetes' SIGKILL after the grace period does the same). The handler only sets a flag: printing
    or pushing from it could re-enter code the signal interrupted."""
    received: list[str] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(signum, _frame) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
