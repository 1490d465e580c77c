"""The live loop on a deployment that only its public endpoints reach: simulated users for several days, an interest
shift among them, and the platform feeding itself from what it served.

What runs, all real processes on loopback:
    redis-server (bus)      the event bus, Redis Streams in 2 shards, its data on disk (AOF) so a restart keeps it
    redis-server (store)    the Feast online store the predictors read and the stream processor writes
    the local deployment    retrieval, ranking and homefeed predictors of the registry's champion
                            (components/cluster/local_deployment.py); the homefeed logs every served pin to the bus
                            and takes the users' clock (`--client-time`)
    the actions service     `python -m serving actions`: the users' clicks, repins and hides, onto the bus
    the stream processor    `homefeed stream redis://...`: the bus into the online sequences and the offline event log

The users (homefeed/live.py) are the world's, acting by its ground truth; the world is tiny+liveshift: a 14-day
history, then on the run's day 2 most users (80%) move 70% of their taste onto three long-tail interests. After each
day the operator's part runs as a cluster's CronJob would: `homefeed monitor run` on the offline log with the
registry's champion and the trigger policy, whose retraining (homefeed_retraining on the log, gated against the
champion) deploys to the running deployment. On day 4 the bus is stopped mid-day and started again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from feast import FeatureStore
from redis_process import RedisProcess

from components.cluster import local_deployment
from components.cluster.launcher import free_ports, stop_pids
from components.data.world.truth import GroundTruth
from components.gate import GatePolicy
from components.registry import Registry
from components.release import MODEL_NAME
from components.stream.offline_log import OfflineEventLog, to_dataset
from components.stream.replay import check_parity, offline_sequences
from homefeed.cli import main
from homefeed.live import PublicEndpoints, read_run, run_days
from pipelines.local import load_run

pytestmark = [pytest.mark.e2e, pytest.mark.quality]

DAYS, SHIFT_DAY, FAULT_DAY, OUTAGE_S = 6, 2, 4, 15.0
# The default trigger rules but the engaged interests' drift: chosen on world:small, whose days hold 20 times this
# world's engagements; here a quiet day's Jensen-Shannon distance was 0.097 against the rule's 0.12 (the first run).
# A cool-down of 4 days, not 3, covers the rest of the run: one retraining per change is the policy's to keep, and a
# day's HIT@3 on this world rests on about 250 repins, so a 20% fall from the new model's first day is 2 standard
# errors: a second trigger there would be the noise's, not the world's.
POLICY = {"rules": [{"name": "repin rate fell", "kind": "drop", "column": "repin", "threshold": 0.2},
                    {"name": "HIT@3 repin decayed", "kind": "decay", "column": "top3_repin", "threshold": 0.2}],
          "cooldown_days": 4}  # fmt: skip
# The default gate's rules with tolerances near two standard errors of a half-day holdout of this world (about 300
# positives, 80 hides: recall's standard error near 0.025, HIT@3's near 0.05) instead of 0.01: the challenger must not
# be clearly worse. With 0.01 the gate decided by noise: it refused challengers on HIT@3 hide (0.33 against 0.26) and
# on recall@10 (0.142 against 0.177, with recall@100 0.648 against 0.618) in two runs of this test.
GATE = json.dumps({
    "recall@100": {"direction": "higher", "tolerance": 0.05}, "recall@10": {"direction": "higher", "tolerance": 0.05},
    "hit@3_repin": {"direction": "higher", "tolerance": 0.1}, "hit@3_click": {"direction": "higher", "tolerance": 0.1},
    "hit@3_hide": {"direction": "lower", "tolerance": 0.1},
})  # fmt: skip
SETTINGS = {"retrieval_epochs": 2, "ranking_epochs": 1, "ranking_max_examples": 5_000, "ray_workers": 0}
# The first model's gate: the default without the first-model floor, since the loop needs a champion to start from
# and 2 epochs on a tiny world are not meant to beat popularity (the floor has its own tests)
NO_FLOOR = json.dumps(GatePolicy.default().to_dict() | {"first_model": {"beat_baselines": False}})
USERS = 300  # every user of the tiny world
# Exploration slots of a feed of 10. With 2, in one run: the shifted users' impressions of their new interests stayed
# near 6% of theirs on every day, their repin rate did not recover (0.025, 0.022 before the shift; 0.015 on it;
# 0.012, 0.012, 0.015 after), and the retraining's challenger was refused on recall@100 (0.456 against 0.521, the
# holdout's positives now partly on explored, popular pins; popularity's recall@100 there was 0.72): docs/live-loop.md.
EXPLORE = 0


def homefeed(workspace: Path, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"HOMEFEED_WORKSPACE": str(workspace)})
    assert result.exit_code == 0, result.output
    return result.output


def sets(**params) -> list[str]:
    return [arg for name, value in params.items() for arg in ("--set", f"{name}={value}")]


def wait_for_log(log_dir: Path, served: pd.DataFrame, sent: pd.DataFrame, timeout_s: float = 180.0) -> pd.DataFrame:
    """The offline log once it holds every impression served and every action sent (the stream processor writes it
    at each push); fails with the counts when it does not in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        log = OfflineEventLog(log_dir).read().to_pandas() if OfflineEventLog(log_dir).parts() else pd.DataFrame()
        shown = int((log["action"] == "impression").sum()) if len(log) else 0
        acted = len(log) - shown
        if shown >= len(served) and acted >= len(sent):
            return log
        assert time.monotonic() < deadline, (
            f"the log holds {shown} of {len(served)} impressions, {acted} of {len(sent)}"
        )
        time.sleep(0.5)


def _metric(text: str, name: str) -> float:
    """A Prometheus counter's value from an exposition text (0 when absent)."""
    lines = [line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


class Processes:
    """The actions service and the stream processor, as subprocesses (the predictors are the local deployment's)."""

    def __init__(self, root: Path, bus: str, features: Path, log_dir: Path) -> None:
        (port,) = free_ports(1)
        self.actions_url = f"http://127.0.0.1:{port}"
        root.mkdir(parents=True, exist_ok=True)
        self.logs = root
        self.actions = self._start("actions", [sys.executable, "-m", "serving", "actions", "--events", bus,
                                               "--dead-letter", str(root / "dead"), "--http-port", str(port)])  # fmt: skip
        self.stream = self._start("stream", [sys.executable, "-m", "homefeed.cli", "stream", bus, "--features",
                                             str(features), "--checkpoint", str(root / "stream" / "checkpoint.json"),
                                             "--event-log", str(log_dir), "--max-delay-ms", "200"])  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.actions_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.actions.poll() is None and time.monotonic() < deadline, (root / "actions.log").read_text()
            time.sleep(0.2)

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as out:
            return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        for proc in (self.actions, self.stream):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def test_served_traffic_feeds_monitoring_retraining_and_the_next_champion(tmp_path):
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    ws = tmp_path / "workspace"
    bus_server, store_server = RedisProcess(tmp_path / "bus"), RedisProcess(tmp_path / "store")
    bus_server.start()
    store_server.start()
    bus = f"{bus_server.url}?shards=2"
    registry, deploy_dir, log_dir = ws / "registry", ws / "serving", ws / "event-log"
    release = {**SETTINGS, "online_store": store_server.url, "registry": registry, "deploy_target": "none",
               "gate_policy": NO_FLOOR}  # fmt: skip
    homefeed(ws, "pipeline", "run", "--local", "--pipeline", "homefeed_training", "--source", "world:tiny+liveshift",
             *sets(**release))  # fmt: skip
    run = load_run(ws / "runs")
    world, features = run.path("dataset"), run.path("feature_store")
    champion = Registry(str(registry)).champion(MODEL_NAME)
    assert champion is not None and champion.version == 1
    Registry(str(registry)).fetch(MODEL_NAME, 1, local_deployment.release_dir(deploy_dir, 1),
                                  only=("retrieval", "ranking", "index"))  # fmt: skip
    # 100 candidates, not 200: ranking (early fusion over 100 actions per candidate) is most of a day's wall time
    # EXPLORE slots per feed: popular pins of random interests (serving/homefeed.py)
    state = local_deployment.deploy(deploy_dir, 1, features, homefeed_args=[
        "--events", bus, "--client-time", "--spool-dir", str(tmp_path / "spool"), "--candidates", "100",
        "--explore", str(EXPLORE)])  # fmt: skip
    processes = Processes(tmp_path / "procs", bus, features, log_dir)
    endpoints = PublicEndpoints(state["servers"]["homefeed"]["url"], processes.actions_url)
    retrain = {**release, "deploy_target": f"local:{deploy_dir}", "holdout_days": 0.5, "ranking_days": 2,
               "gate_policy": GATE}  # fmt: skip
    source = f"log:{log_dir}?catalog={world}"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    traffic, days, monitored = tmp_path / "traffic", [], {}

    def fault(day: int, done: int, total: int) -> None:  # the bus goes down mid-day, for a few batches' time
        if day == FAULT_DAY and done == total // 2:
            bus_server.stop()
            threading.Timer(OUTAGE_S, bus_server.start).start()

    try:
        for day in range(DAYS):
            days += run_days(world, endpoints, range(day, day + 1), traffic, users=USERS, progress=fault)
            served, sent = read_run(traffic)
            wait_for_log(log_dir, served, sent)
            if day >= 1:  # day 0 has no live day before it to be compared with
                out = homefeed(ws, "monitor", "run", "--dataset", source, "--registry", str(registry), "--trigger",
                               "--policy", str(policy), "--max-requests", "500", *sets(**retrain))  # fmt: skip
                monitored[day] = out
        served, sent = read_run(traffic)
        log = wait_for_log(log_dir, served, sent)
        deployed = local_deployment.read_state(deploy_dir)
        metrics = httpx.get(f"{deployed['servers']['homefeed']['url']}/metrics", timeout=10).text
        # parity: the online sequences are the log's offline definition at its end
        to_dataset(log_dir, world, tmp_path / "log-dataset")
        users, end = np.arange(USERS), int(log["ts"].max()) + 1
        wanted = offline_sequences(tmp_path / "log-dataset", users, end)
        parity = check_parity(FeatureStore(repo_path=str(features)), users, wanted)
    finally:
        endpoints.close()
        processes.stop()
        state_now = local_deployment.read_state(deploy_dir)
        if state_now and state_now.get("status") == "serving":
            stop_pids([s["pid"] for s in state_now["servers"].values()])
        bus_server.stop()
        store_server.stop()

    report = {"days": days, "monitor": monitored}
    (tmp_path / "report.json").write_text(json.dumps(report, indent=2, default=str))
    # every feed was answered, through the retraining's rollout and the bus outage; the outage was felt: actions
    # were retried, and impressions spooled (by the v2 homefeed, which served every day since the rollout)
    assert sum(d["failed_feeds"] for d in days) == 0, days
    assert days[FAULT_DAY]["retries"] > 0 and sum(d["retries"] for d in days) == days[FAULT_DAY]["retries"]
    assert _metric(metrics, "homefeed_events_spooled_total") > 0
    # count equality: every served impression and every sent action is in the offline log, once
    key = ["user_id", "pin_id", "ts", "request_id"]
    logged = log.drop_duplicates(subset=[*key, "action"])
    shown = logged[logged["action"] == "impression"]
    assert len(shown) == len(served) and len(logged) - len(shown) == len(sent)
    merged = served.merge(shown, on=key, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    acted = sent.merge(logged, on=[*key, "action"], how="left", indicator=True)
    assert (acted["_merge"] == "both").all()
    triggers = [json.loads(line) for line in (ws / "monitoring" / "triggers.jsonl").read_text().splitlines()]
    print(json.dumps({"days": days, "triggers": triggers}, indent=1, default=str))
    # drift on the first day after the shift, and exactly one retraining, which the gate passed and the deployment serves
    fired = [t for t in triggers if t["trigger"]]
    assert len(fired) == 1, triggers
    assert not triggers[0]["crossed"]  # day 1: a quiet day
    assert triggers[SHIFT_DAY - 1]["trigger"], triggers[SHIFT_DAY - 1]
    assert deployed["version"] == 2 and Registry(str(registry)).champion(MODEL_NAME).version == 2
    assert parity == {"users": USERS, "mismatches": 0}
    # the shifted users' engagement: per day, their repins per impression served to them
    truth = GroundTruth.load(Path(world) / "ground_truth.npz")
    rates = repin_rates(served, sent, truth.user_shifted, days[0]["start_ms"])
    targets = np.isin(truth.pin_interest, truth.params["shift_interests"])
    rates["shifted_shown_new_interests"] = shown_share(served, truth.user_shifted, targets, days[0]["start_ms"])
    (tmp_path / "recovery.json").write_text(json.dumps(rates))
    print("repins per impression by day, shifted and other users:", json.dumps(rates))


def repin_rates(served: pd.DataFrame, sent: pd.DataFrame, shifted: np.ndarray, start_ms: int) -> dict[str, list]:
    """Per day of the run, repins per impression of the shifted users and of the others."""
    day_shown, day_sent = (served["ts"] - start_ms) // 86_400_000, (sent["ts"] - start_ms) // 86_400_000
    out = {}
    for name, inside in (("shifted", True), ("other", False)):
        shown = shifted[served["user_id"].to_numpy()] == inside
        repinned = (shifted[sent["user_id"].to_numpy()] == inside) & (sent["action"] == "repin").to_numpy()
        out[name] = [
            round(float((repinned & (day_sent == d)).sum() / max(1, (shown & (day_shown == d)).sum())), 4)
            for d in range(DAYS)
        ]
    return out


def shown_share(served: pd.DataFrame, shifted: np.ndarray, targets: np.ndarray, start_ms: int) -> list[float]:
    """Per day of the run, the share of the shifted users' impressions that were pins of the interests they moved to."""
    day = (served["ts"] - start_ms) // 86_400_000
    mine = shifted[served["user_id"].to_numpy()]
    new = targets[served["pin_id"].to_numpy()]
    return [round(float(new[mine & (day == d)].mean()), 4) if (mine & (day == d)).any() else 0.0 for d in range(DAYS)]
