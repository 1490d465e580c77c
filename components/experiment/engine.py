"""Running an experiment through the real stack: model servers on loopback, the stream processor, the online store.

    features/   a copy of the feature repository, whose online store the experiment's actions update
    index/      a copy of the pin index the servers open
    logs/       the servers' logs
    events.parquet  every impression and action of the experiment (the canonical event contract), as logged
    pages.parquet   one row per page served: arm, user, segment, day, session, page, ts, mode, shown, actions
    assignment.parquet  user -> arm

One retrieval server serves every arm (the arms differ in ranking); each arm has its own ranking server and its own
homefeed server in front of them, the same `python -m serving` processes a deployment runs. Pages are requested in
time order, in batches of pages of distinct users. After each batch the users' actions go through the stream
processor, which pushes the changed sequences to the online store before the next batch is requested, so a user's
next page is ranked with the actions they took on the previous one: realtime features respond within a session.
The processor resumes from the feature repository's replay checkpoint, so its state is every user's sequence at the
end of the world's history.
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
from components.experiment.design import ExperimentConfig, assign_arms, batches, schedule
from components.experiment.users import act

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
    from feast import FeatureStore

    from components.stream.processor import StreamProcessor
    from components.stream.replay import CHECKPOINT
    from serving.launcher import ServerSpec, running_servers

    world, truth = world_of(dataset_dir)
    ds, out_dir = Dataset(dataset_dir), Path(out_dir)
    users = ds.read("users", columns=["user_id", "segment"])
    segments = users["segment"].map({s: i for i, s in enumerate(SEGMENTS)}).to_numpy()
    assigned = assign_arms(users["user_id"].to_numpy(), segments, cfg)
    start_ms = int(ds.read("events", columns=["ts"])["ts"].max()) + 1
    pages = schedule(world, assigned, start_ms, cfg)

    out_dir.mkdir(parents=True, exist_ok=True)
    features = out_dir / "features"
    if features.exists():
        shutil.rmtree(features)  # a rerun starts from the world's end again, not from the last run's actions
    shutil.copytree(features_dir, features)
    # The servers open the index from a copy: a Milvus Lite file is locked by the process that opened it, which may
    # be this one (an index step run in-process just before).
    index = out_dir / "index"
    if index.exists():
        shutil.rmtree(index)
    shutil.copytree(index_dir, index)
    store = FeatureStore(repo_path=str(features))
    # max_delay_ms None and a batch larger than any page batch: the processor pushes exactly when told (run's end)
    processor = StreamProcessor(store, features / "stream" / CHECKPOINT, batch=10**9, max_delay_ms=None)
    # Resumed: from here on the experiment's log is the record, and rewriting the whole state after every batch
    # would cost more than the batch itself; an interrupted experiment is run again from the start.
    processor.checkpoint_path = None
    first_request = int(ds.read("events", columns=["request_id"])["request_id"].max()) + 1

    specs = [ServerSpec("retrieval", ["retrieval", "--model-dir", str(retrieval_dir), "--features-dir",
                                      str(features), "--index-dir", str(index)])]  # fmt: skip
    for arm in cfg.arms:
        specs.append(ServerSpec(f"ranking-{arm.name}", ["ranking", "--model-dir", arm.ranking_dir, "--features-dir",
                                str(features), "--index-dir", str(index), "--device", "cpu"], model="ranking"))  # fmt: skip
        specs.append(ServerSpec(f"homefeed-{arm.name}", ["homefeed", "--retrieval-url", "{retrieval}", "--ranking-url",
                                f"{{ranking-{arm.name}}}", "--candidates", str(cfg.candidates)], model="homefeed"))  # fmt: skip

    rng = np.random.default_rng([cfg.seed, 3])
    started = time.monotonic()
    events, rows = [], []
    groups = batches(pages, cfg.batch_users)
    with running_servers(specs, out_dir / "logs") as urls, httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for done, positions in enumerate(groups, start=1):
            batch = pages.iloc[positions]
            feeds = _serve(client, urls, cfg, batch)
            request_ids = first_request + positions
            batch_events = act(truth, rng, batch["user_id"].to_numpy(), [f["pins"] for f in feeds],
                               batch["ts"].to_numpy(), request_ids)  # fmt: skip
            records = batch_events.drop(columns="page").to_dict("records")
            processor.run(enumerate(records, start=processor.offset))  # pushes before the next batch is served
            events.append(batch_events.drop(columns="page"))
            rows.append(_page_rows(batch, feeds, batch_events, request_ids))
            if progress:
                progress(done, len(groups))
    seconds = time.monotonic() - started
    log = pd.concat(events, ignore_index=True)
    page_table = pd.concat(rows, ignore_index=True)
    names = np.array([arm.name for arm in cfg.arms])
    page_table["arm"] = names[page_table["arm"].to_numpy()]
    log.to_parquet(out_dir / "events.parquet", index=False)
    page_table.to_parquet(out_dir / "pages.parquet", index=False)
    assigned.assign(arm=names[assigned["arm"].to_numpy()]).to_parquet(out_dir / "assignment.parquet", index=False)
    summary = {
        "config": asdict(cfg),
        "start_ms": start_ms,
        "pages": len(page_table),
        "events": len(log),
        "rejected_events": len(processor.rejects),
        "seconds": round(seconds, 1),
        "out": str(out_dir),
    }
    (out_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


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
