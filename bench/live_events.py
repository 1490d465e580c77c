"""The live loop on a real Redis, two measurements, each beside its baseline in the same run:

1. Action -> visible in the next ranking request. A Feast feature store (world:tiny) whose online store is a real
   `redis-server`; the stream processor runs as the `homefeed stream` PROCESS (the Deployment's command: checkpoint,
   dead letter, default --poll-ms 200) consuming the event bus; a publisher thread in this process publishes
   click/repin events (the EVENT contract: user_id, pin_id, action, ts, request_id, surface) at an offered rate,
   paced in 10 ms ticks, for USERS users (ids 0..USERS-1; the tiny world knows the first 300, the others are users
   the processor pushes a first sequence for), each phase RATES events/s for SECONDS. Every PROBE_EVERY-th event is
   probed: a prober in this process reads the online sequences of every user with an unseen probe through
   `online_user_features` (what serving/online.py reads for each ranking request) every POLL_S, until the user's
   sequence holds the event's (pin_id, ts). Its visibility latency = end of the first read that held it - the moment
   just before `publish` was called (an upper bound: the resolution is one poll round, reported). Side by side:
     - redis: `RedisBus` (Redis Streams on the online store's Redis, shards=4, maxlen=200000 as the manifests) and
       `homefeed stream redis://...` (the deployed path);
     - file: `FileBus` (a JSON-lines log) and `homefeed stream LOG --follow` (the embedded default).
   Each with the Deployment's --max-delay-ms 500, and also 50 (shorter phases). Per phase: achieved publish rate,
   visibility p50/p99/max, the backlog when publishing stopped (redis: `RedisStreamSource.backlog()`, pending +
   lag of the group; file: lines published - the checkpoint's offset; both count what is not yet checkpointed), how
   long it took to drain, the processor's CPU share; kept up = every probe seen and the backlog drained within
   DRAIN_OK_S once publishing stopped.
2. Impression logging's added homefeed latency: the three model servers on a trained world:small (built as
   bench/serving_latency.py builds it), with TWO homefeed servers in front of the same retrieval and ranking servers:
   one without --events, one with --events redis://... (serving/event_log.py). The same users, REQUESTS sequential
   one-user requests (n=10) to each after WARMUP, paired: each user is asked of both servers back to back, the order
   alternating (off/on, then on/off, ...), so a change of the machine's load hits both arms alike; p50/p99/mean of
   each, their differences, and the median of the per-user differences (on - off). Then the impressions
   are checked: the entries of the bus' streams == the pins the logging server answered (warm-up included), as a
   multiset of (user_id, pin_id), and its spool is empty.

Everything shares the machine's cores (2 on the build machine) with the client, the publisher, the prober, Redis and
whatever else runs; the load average at the start and end of each part is recorded.
Run: `python -m bench.live_events [--artifacts DIR | --keep DIR]` (writes bench/results/live_events.{json,md}).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np

from bench.harness import run_child, write_result

NAME = "live_events"
RATES = (200, 2_000)  # offered events/s
SECONDS = {500.0: 20.0, 50.0: 10.0}  # per max_delay_ms: seconds per rate phase
USERS, PINS = 10_000, 2_000
PROBE_EVERY = 20
POLL_S = 0.01  # the prober's pause between reads
TICK_S = 0.01  # the publisher's pacing step
DRAIN_OK_S, DRAIN_TIMEOUT_S, PROBE_TIMEOUT_S = 5.0, 30.0, 15.0
BUS_QUERY = "shards=4&maxlen=200000"  # as manifests/base/stream/deployment.yaml and serving/homefeed.yaml
REQUESTS, WARMUP, N, CANDIDATES = 300, 20, 10, 200
TIMEOUT_S = 60.0


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


# --- 1. action -> visible -------------------------------------------------------------------------------------------


class Processor:
    """`homefeed stream SOURCE` as a child process, from start to SIGTERM; its summary JSON when stopped."""

    def __init__(self, source: str, follow: bool, features: Path, work: Path, max_delay_ms: float) -> None:
        import psutil

        self.work = work
        work.mkdir(parents=True)
        self.checkpoint, self.summary_path, self.log = work / "checkpoint.json", work / "summary.json", work / "log"
        exe = Path(sys.executable).with_name("homefeed")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "homefeed.cli"]
        self.argv = [*cmd, "stream", source, "--features", str(features), "--checkpoint", str(self.checkpoint),
                     "--dead-letter", str(work / "dead_letter"), "--max-delay-ms", f"{max_delay_ms:g}",
                     "--summary", str(self.summary_path), *(["--follow"] if follow else [])]  # fmt: skip
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
        self.ps = psutil.Process(self.process.pid)

    def wait_following(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "following" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"homefeed stream did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def checkpointed(self) -> int:
        from components.stream.checkpoint import Checkpoint

        ckpt = Checkpoint.load(self.checkpoint)
        return 0 if ckpt is None else ckpt.offset

    def stop(self) -> dict:
        from components.cluster.process import stop

        if self.process.poll() is not None:
            raise RuntimeError(f"homefeed stream died:\n{self.log.read_text(errors='replace')[-3000:]}")
        stop(self.process, grace_s=60)
        if not self.summary_path.exists():
            return {"error": self.log.read_text(errors="replace")[-2000:]}
        return json.loads(self.summary_path.read_text())


class Prober:
    """Reads the online sequences of every user with a pending probe, every POLL_S, until each probe is seen."""

    def __init__(self, store) -> None:
        self.store = store
        self.incoming: deque[tuple[int, int, int, float]] = deque()  # (user, pin, ts, published at) from the publisher
        self.pending: list[tuple[int, int, int, float]] = []
        self.latencies: list[float] = []
        self.published_at: list[float] = []  # of each seen probe, in the order of `latencies`
        self.rounds: list[float] = []  # monotonic end of every read

    def round(self) -> None:
        from components.features.store import online_user_features

        while self.incoming:
            self.pending.append(self.incoming.popleft())
        if not self.pending:
            return
        users = sorted({p[0] for p in self.pending})
        rows = online_user_features(self.store, users)
        done = time.monotonic()
        self.rounds.append(done)
        held = {}
        for user, pins, ts in zip(users, rows["seq_pin_ids"], rows["seq_ts"], strict=True):
            held[user] = set(zip(pins, ts, strict=True)) if isinstance(pins, list) and isinstance(ts, list) else set()
        left = []
        for probe in self.pending:
            if (probe[1], probe[2]) in held[probe[0]]:
                self.latencies.append(done - probe[3])
                self.published_at.append(probe[3])
            else:
                left.append(probe)
        self.pending = left

    def until(self, finished, deadline_s: float) -> None:
        """Poll while `finished()` is False, then until nothing is pending or `deadline_s` after it finished."""
        end = None
        while True:
            self.round()
            if end is None and finished():
                end = time.monotonic() + deadline_s
            if end is not None and (not self.pending and not self.incoming or time.monotonic() > end):
                return
            time.sleep(POLL_S)

    def windows(self, start: float, seconds: float = 2.0) -> list[float | None]:
        """The worst latency (ms) of the probes published in each `seconds` window from `start`: where a tail
        comes from (a steady cost, or a few stalls)."""
        if not self.latencies:
            return []
        at = (np.array(self.published_at) - start) // seconds
        ms = np.array(self.latencies) * 1000
        return [round(float(ms[at == w].max()), 0) if (at == w).any() else None for w in range(int(at.max()) + 1)]

    def resolution_ms(self) -> float | None:
        gaps = np.diff(self.rounds)
        return round(float(np.median(gaps)) * 1000, 1) if len(gaps) else None


def publish_paced(bus, rate: float, seconds: float, rng: np.random.Generator, prober: Prober, first: int) -> dict:
    """`rate` events/s for `seconds`, on an absolute schedule of TICK_S steps (a late tick publishes what is due);
    every PROBE_EVERY-th event (counting from `first`, over the whole run) is handed to the prober."""
    total = int(rate * seconds)
    users = rng.integers(0, USERS, size=total)
    pins = rng.integers(0, PINS, size=total)
    actions = rng.choice(["click", "repin"], size=total)
    start = time.monotonic()
    sent, tick, publish_s, late_ticks = 0, 0, [], 0
    while sent < total:
        tick += 1
        delay = start + tick * TICK_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -TICK_S:
            late_ticks += 1
        due = min(total, int(rate * (time.monotonic() - start)))
        if due <= sent:
            continue
        ts = int(time.time() * 1000)
        batch = [
            {"user_id": int(users[i]), "pin_id": int(pins[i]), "action": str(actions[i]), "ts": ts,
             "request_id": first + i, "surface": "homefeed"}
            for i in range(sent, due)
        ]  # fmt: skip
        t0 = time.monotonic()
        bus.publish(batch)
        publish_s.append(time.monotonic() - t0)
        for i in range(sent, due):
            if (first + i) % PROBE_EVERY == 0:
                prober.incoming.append((int(users[i]), int(pins[i]), ts, t0))
        sent = due
    wall = time.monotonic() - start
    return {
        "events": total,
        "achieved_per_s": round(total / wall, 1),
        "publish_wall_s": round(wall, 2),
        "publish_calls": len(publish_s),
        "publish_call_p99_ms": pct(np.array(publish_s) * 1000, 99),
        "late_ticks": late_ticks,
    }


def wait_visible(store, user: int, pin: int, ts: int, timeout_s: float = 120.0) -> float:
    from components.features.store import online_user_features

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        row = online_user_features(store, [user]).iloc[0]
        if isinstance(row["seq_pin_ids"], list) and (pin, ts) in set(
            zip(row["seq_pin_ids"], row["seq_ts"], strict=True)
        ):
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f"the warm-up event of user {user} never became visible")


def run_config(kind: str, max_delay_ms: float, redis_url: str, features: Path, store, tmp: Path, seed: int) -> dict:
    """One processor (kind redis or file, one max_delay) through every rate phase, one after the other."""
    from components.stream.bus import FileBus, RedisBus

    tag = f"{kind}-{max_delay_ms:g}"
    if kind == "redis":
        source = f"{redis_url}?{BUS_QUERY}&prefix=bench:{tag}"
        bus = RedisBus(source)
    else:
        source = str(tmp / f"{tag}.jsonl")
        bus = FileBus(source)
    proc = Processor(source, kind == "file", features, tmp / tag, max_delay_ms)
    observer = None
    published = [0]  # events on the bus so far (the publisher thread adds its phase's when it stops)

    def backlog() -> int:
        return observer.backlog() if observer is not None else published[0] - proc.checkpointed()

    try:
        t_start = time.monotonic()
        proc.wait_following()
        if kind == "redis":
            from components.stream.redis_source import RedisStreamSource

            observer = RedisStreamSource(source, consumer="bench-observer")  # reads nothing: backlog() only
        warm = {"user_id": USERS + 1, "pin_id": 1, "action": "click", "ts": int(time.time() * 1000), "request_id": 0,
                "surface": "homefeed"}  # fmt: skip
        bus.publish([warm])
        published[0] += 1
        wait_visible(store, warm["user_id"], 1, warm["ts"])
        startup_s = round(time.monotonic() - t_start, 1)  # start -> the warm-up event visible
        phases = []
        for r, rate in enumerate(RATES):
            seconds = SECONDS[max_delay_ms]
            prober = Prober(store)
            result: dict = {}
            rng = np.random.default_rng([seed, r, int(max_delay_ms)])
            load_before, cpu0, t0 = load(), proc.cpu_s(), time.monotonic()

            def publish(rate=rate, seconds=seconds, prober=prober, result=result, rng=rng) -> None:
                result.update(publish_paced(bus, rate, seconds, rng, prober, first=published[0]))
                published[0] += result["events"]
                result["backlog_at_end"] = backlog()  # the moment publishing stopped
                result["stopped_at"] = time.monotonic()

            publisher = threading.Thread(target=publish, name="publisher")
            publisher.start()
            prober.until(lambda publisher=publisher: not publisher.is_alive(), PROBE_TIMEOUT_S)
            publisher.join()
            while backlog() > 0 and time.monotonic() - result["stopped_at"] < DRAIN_TIMEOUT_S:
                time.sleep(0.05)
            drained_s = time.monotonic() - result["stopped_at"]
            left = backlog()
            cpu = (proc.cpu_s() - cpu0) / (time.monotonic() - t0)
            ms = np.array(prober.latencies) * 1000
            probes = len(prober.latencies) + len(prober.pending)
            phase = {
                "offered_per_s": rate,
                "seconds": seconds,
                **{k: v for k, v in result.items() if k != "stopped_at"},
                "probes": probes,
                "probes_seen": len(prober.latencies),
                "visible_p50_ms": pct(ms, 50),
                "visible_p99_ms": pct(ms, 99),
                "visible_max_ms": round(float(ms.max()), 1) if len(ms) else None,
                "visible_mean_ms": round(float(ms.mean()), 1) if len(ms) else None,
                "visible_max_per_2s_ms": prober.windows(t0),
                "probe_resolution_ms": prober.resolution_ms(),
                "drained_s": round(drained_s, 2),
                "backlog_after_drain": left,
                "processor_cpu_share": round(cpu, 2),
                "kept_up": len(prober.latencies) == probes and left == 0 and drained_s <= DRAIN_OK_S,
                "load_average": {"before": load_before, "after": load()},
            }
            phases.append(phase)
            print(f"{tag} {rate}/s: {json.dumps(phase)}", flush=True)
    finally:
        summary = proc.stop()
        if observer is not None:
            observer.close()
        bus.close()
    return {
        "bus": kind,
        "max_delay_ms": max_delay_ms,
        "processor": " ".join(Path(a).name if a.startswith("/") else a for a in proc.argv),
        "startup_s": startup_s,
        "phases": phases,
        "processor_summary": {
            k: summary.get(k) for k in ("counters", "push_latency_ms", "freshness_ms", "error") if k in summary
        },  # fmt: skip
    }


def visibility(redis_url: str, tmp: Path, delays: list[float], seed: int) -> dict:
    from feast import FeatureStore

    from components.data.world.config import preset
    from components.data.world.simulate import simulate_world
    from components.features.store import build_feature_store

    simulate_world(preset("tiny"), tmp / "world")
    build_feature_store(tmp / "world", tmp / "features", online_store=redis_url)
    store = FeatureStore(repo_path=str(tmp / "features"))
    load_before = load()
    configs = [run_config(kind, delay, redis_url, tmp / "features", store, tmp, seed)
               for delay in delays for kind in ("redis", "file")]  # fmt: skip
    return {
        "world": f"world:tiny (store), users 0..{USERS - 1} (first 300 in the world)",
        "users": USERS,
        "pins": PINS,
        "probe_every": PROBE_EVERY,
        "poll_s": POLL_S,
        "tick_s": TICK_S,
        "bus_query": BUS_QUERY,
        "processor": "homefeed stream, a separate process (default --batch 1000, --poll-ms 200)",
        "prober_and_publisher": "threads of the benchmark process",
        "load_average": {"before": load_before, "after": load()},
        "configs": configs,
    }


# --- 2. impression logging's added latency --------------------------------------------------------------------------


def _feed(client, url: str, user: int) -> tuple[float, str | None, list[int]]:
    import httpx

    body = {"instances": [{"user_id": int(user), "n": N}]}
    t0 = time.perf_counter()
    try:
        response = client.post(f"{url}/v1/models/homefeed:predict", json=body)
    except httpx.HTTPError as exc:
        return time.perf_counter() - t0, type(exc).__name__, []
    seconds = time.perf_counter() - t0
    if response.status_code != 200:
        return seconds, f"HTTP {response.status_code}", []
    p = response.json()["predictions"][0]
    if p.get("mode") != "personalized":
        return seconds, f"mode {p.get('mode')}", [int(x["pin_id"]) for x in p["pins"]]
    return seconds, None, [int(x["pin_id"]) for x in p["pins"]]


def _event_counters(url: str) -> dict[str, float]:
    """The logging server's own counters (serving/event_log.py): published, spooled, replayed."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name.startswith("homefeed_event"):
            for sample in family.samples:
                if not sample.name.endswith("_created"):  # the exposition's creation times are no counts
                    out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _stats(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "mean_ms": round(float(ms.mean()), 1),
            "max_ms": round(float(ms.max()), 1)}  # fmt: skip


def impressions(redis_url: str, tmp: Path, args) -> dict:
    import httpx
    import redis

    from bench.serving_latency import describe
    from components.cluster.launcher import ServerSpec, homefeed_specs, running_servers
    from components.stream.bus import RedisStreams

    root = args.artifacts or args.keep or tmp / "artifacts"
    build_s = None
    if args.artifacts is None:
        print(f"building world:{args.preset} artifacts into {root} ...", flush=True)
        t0 = time.monotonic()
        run_child("bench.serving_latency", "--build", str(root), "--preset", args.preset, "--seed", str(args.seed))
        build_s = round(time.monotonic() - t0, 1)
    setup = describe(root)
    index = shutil.copytree(root / "index", tmp / "index", ignore=shutil.ignore_patterns("LOCK"))
    uri = f"{redis_url}?{BUS_QUERY}&prefix=bench:impressions"
    specs = homefeed_specs(root / "retrieval", root / "ranking", root / "features", index, CANDIDATES, "cpu")
    base = specs[-1]
    on_args = [*base.args, "--events", uri, "--spool-dir", str(tmp / "spool")]
    specs = [*specs[:-1], ServerSpec("homefeed-off", base.args, model="homefeed"),
             ServerSpec("homefeed-on", on_args, model="homefeed")]  # fmt: skip
    arms = ("homefeed-off", "homefeed-on")
    times: dict[str, list[float]] = {a: [] for a in arms}
    errors: dict[str, Counter] = {a: Counter() for a in arms}
    served: Counter = Counter()  # (user, pin) the logging server answered, warm-up included
    load_before = load()
    t_start = time.monotonic()
    with running_servers(specs, tmp / "logs") as urls, httpx.Client(timeout=TIMEOUT_S) as client:
        ready_s = round(time.monotonic() - t_start, 1)
        rng = np.random.default_rng(args.seed)
        warm = rng.integers(0, setup["users"], size=args.warmup)
        users = rng.integers(0, setup["users"], size=args.requests)
        for arm in arms:
            for u in warm:
                _, _, pins = _feed(client, urls[arm], u)
                if arm == "homefeed-on":
                    served.update((int(u), p) for p in pins)
        t0 = time.monotonic()
        paired: list[float] = []  # on - off of one user's two requests, both timed
        for i, u in enumerate(users):
            took = {}
            for arm in arms if i % 2 == 0 else arms[::-1]:
                seconds, err, pins = _feed(client, urls[arm], u)
                if arm == "homefeed-on":
                    served.update((int(u), p) for p in pins)
                if err:
                    errors[arm][err] += 1
                else:
                    times[arm].append(seconds)
                    took[arm] = seconds
            if len(took) == 2:
                paired.append(took["homefeed-on"] - took["homefeed-off"])
        wall = time.monotonic() - t0
        # the log's thread publishes within about 50 ms of a request; give it time, then read what landed
        where = RedisStreams.parse(uri)
        client_r = redis.Redis.from_url(where.url)
        expected, deadline = sum(served.values()), time.monotonic() + 10
        while sum(client_r.xlen(s) for s in where.streams()) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        entries = [json.loads(f[b"e"]) for s in where.streams() for _, f in client_r.xrange(s)]
        client_r.close()
        spooled = sorted(p.name for p in (tmp / "spool").glob("*.jsonl"))
        counters = _event_counters(urls["homefeed-on"])
    landed = Counter((e["user_id"], e["pin_id"]) for e in entries)
    arms_out = {a: {"requests": args.requests, "timed": len(times[a]), "errors": dict(errors[a]), **_stats(times[a])}
                for a in arms}  # fmt: skip
    off, on = arms_out["homefeed-off"], arms_out["homefeed-on"]
    return {
        "setup": {**setup, "build_s_total": build_s, "candidates": CANDIDATES, "n": N, "requests": args.requests,
                  "warmup": args.warmup, "servers_ready_s": ready_s,
                  "bus": uri.replace(redis_url, "redis://127.0.0.1:PORT/0")},
        "arms": arms_out,
        "difference_ms": {k: round(on[k] - off[k], 1) for k in ("p50_ms", "p99_ms", "mean_ms")}
        | {"paired_median_ms": round(float(np.median(paired)) * 1000, 1) if paired else None, "pairs": len(paired)},
        "wall_s": round(wall, 1),
        "impressions": {
            "pins_served": expected,
            "stream_entries": len(entries),
            "match": landed == served,
            "distinct_event_ids": len({e.get("event_id") for e in entries}),
            "spool_files_left": spooled,
            "logger_counters": counters,
        },
        "load_average": {"before": load_before, "after": load()},
    }  # fmt: skip


# --- report ---------------------------------------------------------------------------------------------------------


def _v(x, fmt: str = "{:.0f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def markdown(r: dict) -> str:
    out = ["### Live events: action -> visible online, and impression logging's cost (real Redis)\n"]
    vis = r.get("visibility")
    if vis:
        rows = []
        for c in vis["configs"]:
            bus = "Redis Streams" if c["bus"] == "redis" else "file log (--follow)"
            for p in c["phases"]:
                rows.append(
                    f"| {bus} | {c['max_delay_ms']:g} | {p['offered_per_s']:,} | {p['achieved_per_s']:,.0f} | "
                    f"{p['probes_seen']}/{p['probes']} | {_v(p['visible_p50_ms'])} | {_v(p['visible_p99_ms'])} | "
                    f"{_v(p['visible_max_ms'])} | {p['backlog_at_end']:,} | {p['drained_s']:.1f} | "
                    f"{p['processor_cpu_share'] * 100:.0f}% | {'yes' if p['kept_up'] else 'NO'} |"
                )
        out.append(f"""**Action -> visible in the next ranking request.** A publisher paces click/repin events over
{vis["users"]:,} users at the offered rate; the stream processor is the `homefeed stream` command as a separate process
(batch 1000, poll 200 ms, checkpoint every push), pushing to Feast's Redis online store; the bus is Redis Streams on the
same Redis ({vis["bus_query"]}, the deployed path) or the JSON-lines file log the embedded default follows. Every
{vis["probe_every"]}th event is probed: its user's online sequence is read with `online_user_features` (what the
ranking predictor reads) about every {vis["poll_s"] * 1000:.0f} ms plus the read's own time, until it holds the event;
latency = that read's end - just before `publish`. Backlog = events not yet checkpointed when publishing stopped;
kept up = every probe seen and the backlog gone within {DRAIN_OK_S:.0f} s. Load average
{vis["load_average"]["before"]} before, {vis["load_average"]["after"]} after.

| bus | max_delay ms | offered/s | achieved/s | probes seen | p50 ms | p99 ms | max ms | backlog at end | drained s | processor CPU | kept up |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
""")
    imp = r.get("impressions")
    if imp:
        s, a = imp["setup"], imp["arms"]
        rows = [f"| {name} | {m['timed']} | {_v(m['p50_ms'], '{:.1f}')} | {_v(m['p99_ms'], '{:.1f}')} | "
                f"{_v(m['mean_ms'], '{:.1f}')} | {_v(m['max_ms'], '{:.1f}')} | {sum(m['errors'].values())} |"
                for name, m in a.items()]  # fmt: skip
        d, i = imp["difference_ms"], imp["impressions"]
        rows.append(f"| on - off | | {d['p50_ms']:+.1f} | {d['p99_ms']:+.1f} | {d['mean_ms']:+.1f} | | |")
        paired = "n/a" if d["paired_median_ms"] is None else f"{d['paired_median_ms']:+.1f} ms"
        out.append(f"""**Impression logging's added homefeed latency.** {s["world"]} ({s["users"]:,} users, corpus
{s["corpus"]:,}), the three model servers on CPU; two homefeed servers in front of the same retrieval and ranking
servers, `--events` off and `--events {s["bus"]}` on; {s["requests"]} sequential one-user requests (n={s["n"]}) to
each after {s["warmup"]} warm-up, paired: each user asked of both back to back, the order alternating. Load average
{imp["load_average"]["before"]} before, {imp["load_average"]["after"]} after.

| homefeed | timed | p50 ms | p99 ms | mean ms | max ms | errors |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Median of the per-user differences (on - off, {d["pairs"]} pairs): {paired}.

Impressions landed: {i["stream_entries"]:,} stream entries for {i["pins_served"]:,} pins served
({"the same (user, pin) multiset" if i["match"] else "NOT the same (user, pin) multiset"}), spool files left:
{len(i["spool_files_left"])}; the logger's counters: {", ".join(f"{k} {v:g}" for k, v in i["logger_counters"].items())}.
""")
    out.append(f"Reproduce: `{r['command']}` (wall {r['wall_s']:.0f} s, load average {r['load_average']['start']} at "
               f"the start, {r['load_average']['end']} at the end).")  # fmt: skip
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    from components.features.online_store import local_redis

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", help="world preset of the serving artifacts (default small)")
    parser.add_argument("--requests", type=int, default=REQUESTS, help="timed homefeed requests per arm")
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--delays", default="500,50", help="processor --max-delay-ms values, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("visibility", "impressions"), help="run one measurement only")
    parser.add_argument("--name", default=NAME, help="result name under bench/results/")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--artifacts", type=Path, help="reuse this directory's data/features/retrieval/ranking/index")
    given.add_argument("--keep", type=Path, help="build the artifacts into this directory and keep them")
    args = parser.parse_args(argv)
    delays = [float(d) for d in args.delays.split(",") if d]
    unknown = [d for d in delays if d not in SECONDS]
    if unknown:
        parser.error(f"--delays: phase lengths are set for {sorted(SECONDS)} only, got {unknown}")

    t0, load_start = time.monotonic(), load()
    result: dict = {"command": "python -m bench.live_events" + ("" if argv is None else " " + " ".join(argv))}
    if argv is None and len(sys.argv) > 1:
        result["command"] += " " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        redis_url = stack.enter_context(local_redis(tmp / "redis"))
        if args.only != "visibility":  # first: the build is the heaviest part, the measurements come after it
            result["impressions"] = impressions(redis_url, tmp / "serving", args)
        if args.only != "impressions":
            result["visibility"] = visibility(redis_url, tmp / "visibility", delays, args.seed)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["load_average"] = {"start": load_start, "end": load()}
    result["machine_cores"] = os.cpu_count()
    write_result(args.name, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
