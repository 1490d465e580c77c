"""The stream processor's throughput and freshness on ONE core, against a real Feast SQLite store, on the small
world (about 0.5M events, of which about 37k are actions); side by side, the batch path the features step takes
without the stream (`ActionLog` + `sequence_table` + `push_sequences` of every user at the end) over the same events.

The process is pinned to one CPU (os.sched_setaffinity) before anything else runs, so every thread of it (the
producer thread of the paced runs included) shares that core. The store is built by `build_feature_store` with its
cut-off at the first event, so its online sequences start empty and the stream fills them.

Measured:
  - throughput (events/s, wall time of `StreamProcessor.run` including the final push) for the whole event log
    (impressions included, which the processor validates and ignores) and for the actions alone, from
    (a) the in-process `EventQueue`, filled with every record and closed BEFORE the clock starts (so the producer's
    puts are not timed), and (b) the parquet file source;
  - freshness (read by the processor -> Feast push returned, components/stream/metrics.py) with a producer thread
    putting actions at a fixed rate into the queue while the processor consumes them, with the default max_delay;
    at a high rate the `batch` rule pushes, at a low one the time rule does.
Run: `python -m bench.stream_processor`.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from bench.harness import write_result

NAME = "stream_processor"
TARGET_EVENTS_S = 20_000
BATCH = 1_000
PACED = ((5_000, 10.0), (200, 5.0))  # (events/s, seconds) of the paced freshness runs
REPEATS = {"all_events": 1, "actions_only": 3}  # the actions-only runs take ~2 s each: the median of 3


def _pin_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _throughput(store, records_or_path, n_events: int, kind: str) -> dict:
    from components.stream.processor import StreamProcessor
    from components.stream.sources import EventQueue, open_source

    proc = StreamProcessor(store, batch=BATCH)
    if kind == "queue":
        queue = EventQueue()
        for record in records_or_path:
            queue.put(record)
        queue.close()
        source = queue.read()
    else:
        source = open_source(records_or_path)
    t0 = time.perf_counter()
    summary = proc.run(source)
    seconds = time.perf_counter() - t0
    assert summary["counters"]["events_in"] == n_events, summary["counters"]
    return {
        "events": n_events,
        "seconds": round(seconds, 3),
        "events_per_s": round(n_events / seconds),
        "pushes": summary["counters"]["pushes"],
        "push_latency_ms": summary["push_latency_ms"],
        "freshness_ms": summary["freshness_ms"],
    }


def _median_run(store, records_or_path, n_events: int, kind: str, repeats: int) -> dict:
    runs = sorted((_throughput(store, records_or_path, n_events, kind) for _ in range(repeats)),
                  key=lambda r: r["events_per_s"])  # fmt: skip
    return {**runs[len(runs) // 2], "runs_events_per_s": [r["events_per_s"] for r in runs]}


def _paced(store, records: list[dict], rate: float, seconds: float) -> dict:
    """A producer thread puts `rate` records/s (in 10 ms steps, on an absolute schedule) for `seconds`, then closes."""
    from components.stream.processor import StreamProcessor
    from components.stream.sources import EventQueue

    records = records[: int(rate * seconds)]
    proc = StreamProcessor(store, batch=BATCH)  # default max_delay_ms
    queue = EventQueue()

    def produce() -> None:
        step = max(int(rate / 100), 1)
        start = time.monotonic()
        for i in range(0, len(records), step):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for record in records[i : i + step]:
                queue.put(record)
        queue.close()

    producer = threading.Thread(target=produce)
    t0 = time.perf_counter()
    producer.start()
    summary = proc.run(queue.read())
    wall = time.perf_counter() - t0
    producer.join()
    return {
        "target_rate_per_s": rate,
        "events": len(records),
        "achieved_rate_per_s": round(len(records) / wall),
        "seconds": round(wall, 2),
        "pushes": summary["counters"]["pushes"],
        "max_delay_ms": proc.max_delay_s * 1000,
        "freshness_ms": summary["freshness_ms"],
        "push_latency_ms": summary["push_latency_ms"],
    }


def _batch_path(store, events: pd.DataFrame, users) -> dict:
    """What the features step does without the stream: every user's sequence from the log, pushed at the end."""
    from components.features.sequence import ActionLog
    from components.features.store import push_sequences
    from components.features.tables import sequence_table

    t0 = time.perf_counter()
    table = sequence_table(ActionLog(events), users, int(events["ts"].max()) + 1)
    t1 = time.perf_counter()
    push_sequences(store, table)
    seconds = time.perf_counter() - t0
    return {
        "events": len(events),
        "users": len(users),
        "seconds": round(seconds, 3),
        "sequence_table_s": round(t1 - t0, 3),
        "push_s": round(seconds - (t1 - t0), 3),
        "events_per_s": round(len(events) / seconds),
    }


def _markdown(r: dict) -> str:
    t = r["throughput"]
    rows = []
    for stream in ("all_events", "actions_only"):
        b = r["baseline_batch_path"][stream]
        for kind in ("queue", "parquet"):
            m = t[stream][kind]
            rows.append(
                f"| {stream.replace('_', ' ')} | {kind} | {m['events']:,} | {m['events_per_s']:,} | {m['pushes']} | "
                f"{m['freshness_ms']['p50']:.0f} / {m['freshness_ms']['p99']:.0f} | {b['events_per_s']:,} |"
            )
    paced = "\n".join(
        f"| {p['target_rate_per_s']:,.0f} ({p['achieved_rate_per_s']:,} achieved) | {p['events']:,} | {p['pushes']} "
        f"| {p['freshness_ms']['p50']:.0f} | {p['freshness_ms']['p99']:.0f} | {p['push_latency_ms']['p99']:.0f} |"
        for p in r["freshness_paced"]
    )
    worst = r["min_events_per_s"]
    return f"""### Stream processor: throughput and freshness on one core (world:small, Feast SQLite online store)

Pinned to CPU {r["cpu"]} (os.sched_setaffinity: the whole process, producer thread included, on one core);
batch={BATCH} events per push, max_delay={r["max_delay_ms"]:.0f} ms. Queue runs: the queue is filled and closed before
the clock starts. Baseline: the features step's batch path (`ActionLog` + `sequence_table` + `push_sequences` of all
{r["users"]:,} users at the end) over the same events.

| stream | source | events | events/s | pushes | freshness p50 / p99 ms | batch path events/s |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Actions-only rows: the median of {REPEATS["actions_only"]} runs. Target ≥ {TARGET_EVENTS_S:,} events/s on one core: slowest case {worst:,} events/s, {"met" if r["met"] else "NOT met"}.

Freshness (processor read -> Feast write returned; not producer -> broker) with a producer thread putting actions at
a fixed rate:

| rate events/s | events | pushes | freshness p50 ms | freshness p99 ms | push p99 ms |
|---|---|---|---|---|---|
{paced}
"""


def main() -> dict:
    cpu = _pin_one_core()
    from components.data.dataset import Dataset
    from components.data.world.config import preset
    from components.data.world.simulate import simulate_world
    from components.features.sequence import SEQUENCE_ACTIONS
    from components.features.store import build_feature_store

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = tmp / "world"
        simulate_world(preset("small"), world)
        events = Dataset(world).read("events")
        store = build_feature_store(world, tmp / "fs", as_of_ts=int(events["ts"].min()))
        users = Dataset(world).read("users")["user_id"].to_numpy()
        actions = events[events["action"].isin(SEQUENCE_ACTIONS)].reset_index(drop=True)
        actions_path = tmp / "actions.parquet"
        actions.to_parquet(actions_path, index=False)
        streams = {
            "all_events": (events, Dataset(world).path("events")),
            "actions_only": (actions, actions_path),
        }
        throughput = {}
        for name, (frame, path) in streams.items():
            records = frame.to_dict(orient="records")
            throughput[name] = {
                kind: _median_run(store, records if kind == "queue" else path, len(frame), kind, REPEATS[name])
                for kind in ("queue", "parquet")
            }
            print(name, {k: v["events_per_s"] for k, v in throughput[name].items()}, flush=True)
        action_records = actions.to_dict(orient="records")
        paced = [_paced(store, action_records, rate, seconds) for rate, seconds in PACED]
        baseline = {name: _batch_path(store, frame, users) for name, (frame, _) in streams.items()}
    worst = min(m["events_per_s"] for s in throughput.values() for m in s.values())
    result = {
        "target": {"events_per_s": TARGET_EVENTS_S, "cores": 1},
        "met": worst >= TARGET_EVENTS_S,
        "min_events_per_s": worst,
        "cpu": cpu,
        "pinned_to_one_core": os.sched_getaffinity(0) == {cpu},
        "world": "small",
        "online_store": "sqlite",
        "batch": BATCH,
        "max_delay_ms": paced[0]["max_delay_ms"],
        "users": len(users),
        "queue_mode": "filled with every record and closed before timing starts",
        "throughput": throughput,
        "freshness_paced": paced,
        "baseline_batch_path": baseline,
    }
    md = _markdown(result)
    write_result(NAME, result, md)
    return result


if __name__ == "__main__":
    main()
