"""Running an experiment through the real stack: model servers on loopback, the stream processor, the online store.

    shared/ or arm-<name>/   a lane: copies of the feature repository (features/, whose online store the
                             experiment's actions update) and of the pin index (index/); one for a split test,
                             one per arm for the paired design
    logs/                    the servers' logs
    events.parquet           every impression and action of the experiment (the canonical event columns, plus arm)
    pages.parquet            one row per page served: arm, user, segment, day, session, page, ts, mode, shown,
                             actions
    assignment.parquet       user -> arm (every arm, for the paired design)

Each lane has its retrieval server; each arm has its own ranking server and its own homefeed server in front of its
lane's retrieval and its ranking, the same `python -m serving` processes a deployment runs. Pages are requested in
batches of pages of distinct users, each user's pages in their time order (design.batches). After each batch the
users' actions go through their lane's stream processor, which pushes the changed sequences to the online store
before the next batch is requested, so a user's next page is ranked with the actions they took on the previous
one: realtime features respond within a session. The processor resumes from the feature repository's replay
checkpoint, so its state is every user's sequence at the end of the world's history.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from components.data.contracts import SEGMENTS
from components.data.dataset import Dataset
from components.data.world.config import WorldConfig
from components.data.world.truth import GroundTruth
from homefeed.experiment.design import ExperimentConfig, assign_arms, batches, schedule
from homefeed.experiment.users import act

REQUEST_TIMEOUT_S = 120.0
TRUTH_FILE = "ground_truth.npz"


def world_of(dataset_dir: Path) -> tuple[WorldConfig, GroundTruth]:
    """The world's configuration and ground truth; a clear error for a dataset that is not a simulated world."""
    ds = Dataset(dataset_dir)
    config = ds.manifest().get("config")
    truth = Path(dataset_dir) / TRUTH_FILE
    if config is None or not truth.exists():
        raise ValueError(
            f"{dataset_dir} is not a simulated world (no world config in dataset.json or no {TRUTH_FILE}): an "
            "experiment needs the ground truth to simulate users, so use `homefeed simulate` output"
        )
    return WorldConfig(**config), GroundTruth.load(truth)


def run_experiment(
    dataset_dir: Path,
    features_dir: Path,
    retrieval_dir: Path,
    index_dir: Path,
    cfg: ExperimentConfig,
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Serve every page of the experiment's schedule to its users through their arm's servers; write the logs
    above and return a summary ({pages, events, seconds, out}). `progress(done, total)` after each batch."""
    from components.cluster.launcher import ranked_feed_specs, retrieval_spec, running_servers

    world, truth = world_of(dataset_dir)
    ds, out_dir = Dataset(dataset_dir), Path(out_dir)
    users = ds.read("users", columns=["user_id", "segment"])
    segments = users["segment"].map({s: i for i, s in enumerate(SEGMENTS)}).to_numpy()
    assigned = assign_arms(users["user_id"].to_numpy(), segments, cfg)
    history = ds.read("events", columns=["ts", "request_id"])  # the experiment continues where the world ends
    start_ms, first_request = int(history["ts"].max()) + 1, int(history["request_id"].max()) + 1
    pages = schedule(world, assigned, start_ms, cfg)

    if out_dir.exists():
        shutil.rmtree(out_dir)  # the run's folder is the engine's: a rerun replaces it, logs and lanes included
    out_dir.mkdir(parents=True)
    lanes = _lanes(cfg, features_dir, index_dir, out_dir)
    lane_of_arm = np.array([0] * len(cfg.arms) if len(lanes) == 1 else range(len(cfg.arms)))
    specs = [retrieval_spec(retrieval_dir, lane.features, lane.index, lane.retrieval) for lane in lanes]
    for arm, lane in zip(cfg.arms, lane_of_arm, strict=True):
        specs += ranked_feed_specs(arm.ranking_dir, lanes[lane].features, lanes[lane].index, cfg.candidates,
                                   device="cpu", arm=arm.name, retrieval=lanes[lane].retrieval)  # fmt: skip

    started = time.monotonic()
    events, rows = [], []
    groups = batches(pages, cfg.batch_users)
    with running_servers(specs, out_dir / "logs") as urls, httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for done, positions in enumerate(groups, start=1):
            batch = pages.iloc[positions]
            feeds = _serve(client, urls, cfg, batch)
            request_ids = first_request + positions
            batch_events = act(truth, cfg.seed, batch["user_id"].to_numpy(), [f["pins"] for f in feeds],
                               batch["ts"].to_numpy(), request_ids)  # fmt: skip
            batch_events["arm"] = batch["arm"].to_numpy()[batch_events["page"].to_numpy()]
            lane_of_event = lane_of_arm[batch_events["arm"].to_numpy()]
            for i, lane in enumerate(lanes):  # pushed before the next batch is served
                lane.feed(batch_events[lane_of_event == i].drop(columns=["page", "arm"]))
            events.append(batch_events.drop(columns="page"))
            rows.append(_page_rows(batch, feeds, batch_events, request_ids))
            if progress:
                progress(done, len(groups))
    seconds = time.monotonic() - started
    # batches follow each user's order, not the clock: the logs are written in time order
    order = ["ts", "user_id", "arm"]
    log = pd.concat(events, ignore_index=True).sort_values(order, kind="stable", ignore_index=True)
    page_table = pd.concat(rows, ignore_index=True).sort_values(order, kind="stable", ignore_index=True)
    names = np.array([arm.name for arm in cfg.arms])
    log["arm"] = names[log["arm"].to_numpy()]
    page_table["arm"] = names[page_table["arm"].to_numpy()]
    log.to_parquet(out_dir / "events.parquet", index=False)
    page_table.to_parquet(out_dir / "pages.parquet", index=False)
    assigned.assign(arm=names[assigned["arm"].to_numpy()]).to_parquet(out_dir / "assignment.parquet", index=False)
    summary = {
        "config": asdict(cfg),
        "start_ms": start_ms,
        "pages": len(page_table),
        "events": len(log),
        # what the feedback loop did, per online store: the experiment's events applied to the users' sequences,
        # pushes to the store
        "stream": {lane.features.parent.name: lane.counters() for lane in lanes},
        "seconds": round(seconds, 1),
        "out": str(out_dir),
    }
    (out_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class _Lane:
    """The online state a set of arms serves from: a working copy of the feature repository and index, the stream
    processor that updates it, and the retrieval server on it. A split test has one lane for every arm; the paired
    design one per arm, so each copy of a user has a realtime sequence of its own."""

    def __init__(self, features_dir: Path, index_dir: Path, root: Path, retrieval: str) -> None:
        from feast import FeatureStore

        from components.cluster.launcher import working_copy
        from components.stream.processor import StreamProcessor
        from components.stream.replay import CHECKPOINT

        # The servers and the processor work on copies: a rerun starts from the world's end again, not from the last
        # run's actions, and the index may be open (locked) in this process.
        self.features, self.index = working_copy(features_dir, index_dir, root)
        self.retrieval = retrieval
        store = FeatureStore(repo_path=str(self.features))
        # max_delay_ms None and a batch larger than any page batch: the processor pushes exactly when told (feed's end)
        self.processor = StreamProcessor(store, self.features / "stream" / CHECKPOINT, batch=10**9, max_delay_ms=None)
        # Resumed: from here on the experiment's log is the record, and rewriting the whole state after every batch
        # would cost more than the batch itself; an interrupted experiment is run again from the start.
        self.processor.checkpoint_path = None
        self._before = dict(self.processor.metrics.counts)  # the replay's counts, restored from its checkpoint

    def feed(self, events: pd.DataFrame) -> None:
        """Apply a batch's events and push the changed sequences to the online store."""
        self.processor.run(enumerate(events.to_dict("records"), start=self.processor.offset))
        if self.processor.rejects:
            # the experiment's own events: a rejection is a bug here, and a user whose actions were dropped would be
            # served as if they had not acted, so stop rather than report on a broken loop
            first = self.processor.rejects[0]
            raise RuntimeError(f"the stream processor rejected {len(self.processor.rejects)} of the experiment's "
                               f"events, the first {first.record}: {first.errors}")  # fmt: skip

    def counters(self) -> dict[str, int]:
        """The processor's counters for the experiment's events alone."""
        return {k: int(v - self._before.get(k, 0)) for k, v in self.processor.metrics.counts.items()}


def _lanes(cfg: ExperimentConfig, features_dir: Path, index_dir: Path, out_dir: Path) -> list[_Lane]:
    if cfg.design == "split":
        return [_Lane(features_dir, index_dir, out_dir / "shared", "retrieval")]
    return [_Lane(features_dir, index_dir, out_dir / f"arm-{a.name}", f"retrieval-{a.name}") for a in cfg.arms]


def _serve(client: httpx.Client, urls: dict[str, str], cfg: ExperimentConfig, batch: pd.DataFrame) -> list[dict]:
    """One homefeed request per arm present in `batch`; returns, per page in batch order, {pins, mode, interests}."""
    out: list[dict] = [{}] * len(batch)
    arms = batch["arm"].to_numpy()
    for arm in np.unique(arms):
        where = np.flatnonzero(arms == arm)
        name = cfg.arms[int(arm)].name
        body = {"instances": [{"user_id": int(u), "n": cfg.feed_size} for u in batch["user_id"].to_numpy()[where]]}
        response = client.post(f"{urls[f'homefeed-{name}']}/v1/models/homefeed:predict", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"arm {name}: the homefeed answered HTTP {response.status_code}: {response.text[:500]}")
        for i, prediction in zip(where, response.json()["predictions"], strict=True):
            pins = prediction["pins"]
            out[i] = {
                "pins": np.array([p["pin_id"] for p in pins], dtype=np.int64),
                "interests": np.array([p["interest_id"] for p in pins], dtype=np.int64),
                "mode": prediction["mode"],
            }
    return out


def _page_rows(batch: pd.DataFrame, feeds: list[dict], events: pd.DataFrame, request_ids: np.ndarray) -> pd.DataFrame:
    """Per page: what was shown and what the user did with it."""
    counts = pd.crosstab(events["page"], events["action"]).reindex(range(len(batch)), fill_value=0)
    rows = batch.reset_index(drop=True).copy()
    rows["request_id"] = request_ids
    rows["mode"] = [f["mode"] for f in feeds]
    rows["shown"] = [len(f["pins"]) for f in feeds]
    rows["distinct_interests"] = [len(np.unique(f["interests"])) for f in feeds]
    for action in ("click", "repin", "hide"):
        rows[f"{action}s"] = counts[action].to_numpy() if action in counts else 0
    return rows
