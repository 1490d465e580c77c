"""Simulated users on a deployment's public endpoints: the world's users open their homefeeds and act on them.

This is live traffic as a deployment sees it, and nothing else: every feed is a `POST /v1/models/homefeed:predict`
to the homefeed predictor, every click, repin and hide a `POST /v1/actions` to the actions service. What the users
do comes from the simulated world's ground truth (homefeed/experiment/users.py `act`, the draw the world's own
traffic uses); when they come comes from its traffic model (homefeed/experiment/design.py `visits`). The deployment
logs the impressions itself, streams the actions into the online sequences and stores both in the offline event log:
this client holds no back door into any of it.

Time is the world's. Day d of a run is [world end + d days, + 1 day); a feed request carries its page's time as `ts`,
which the homefeed predictor takes only when started with `--client-time` (serving/homefeed.py), and an action
carries its own `ts`. Pages go out in batches of distinct users, each user's pages in order (design.batches), the
actions of a batch posted before the next batch is requested; the stream processor pushes within its max delay
(500 ms by default), so a user's next page is usually, not certainly, ranked with the previous page's actions.

Delivery: an action's `event_id` is `<request id>:<pin>:<action>` (a user acts at most once per impression), so a
post the actions service answered 503 (its bus is down) or that failed in transit is sent again with the same ids
until it is taken: the service's idempotency turns the retries into exactly one event each. A feed request that
fails is not retried: it is counted (`failed_feeds`), as a user's failed page would be.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from components.data.contracts import SEGMENTS
from components.data.dataset import Dataset
from components.data.world.config import DAY_MS
from homefeed.experiment.design import batches, visits
from homefeed.experiment.engine import world_of
from homefeed.experiment.users import act

ACTIONS_PER_POST = 1000  # the actions service's batch limit (serving/actions.py MAX_EVENTS)


class EndpointError(RuntimeError):
    """The deployment answered with a client error: the request itself is wrong, and retrying will not help."""


@dataclass
class PublicEndpoints:
    """A deployment's two public endpoints: the homefeed predictor's base URL and the actions service's."""

    homefeed_url: str
    actions_url: str
    timeout_s: float = 60.0
    retry_for_s: float = 120.0  # how long an action post is retried while the service answers 503 or is unreachable
    client: httpx.Client | None = field(default=None, repr=False)  # default: one of its own

    def __post_init__(self) -> None:
        self.homefeed_url, self.actions_url = self.homefeed_url.rstrip("/"), self.actions_url.rstrip("/")
        self.client = self.client or httpx.Client(timeout=self.timeout_s)

    def close(self) -> None:
        self.client.close()

    def feeds(self, users: np.ndarray, n: int, ts: np.ndarray) -> list[dict] | None:
        """One homefeed request for `users` (their pages at times `ts`); the predictions in order, None when the
        request failed (any answer but 200, or none)."""
        body = {"instances": [{"user_id": int(u), "n": n, "ts": int(t)} for u, t in zip(users, ts, strict=True)]}
        headers = {"x-request-id": f"live-{uuid.uuid4().hex}"}
        try:
            response = self.client.post(f"{self.homefeed_url}/v1/models/homefeed:predict", json=body, headers=headers)
        except httpx.HTTPError:
            return None
        if response.status_code == 400:
            raise EndpointError(f"the homefeed refused the request: {response.text[:500]}")
        return response.json()["predictions"] if response.status_code == 200 else None

    def send(self, events: list[dict]) -> dict[str, int]:
        """Post `events` to the actions service, retrying what it could not take; returns {accepted, duplicates,
        retries}. Raises EndpointError on a 400 and RuntimeError when it stays unavailable past `retry_for_s`."""
        totals = {"accepted": 0, "duplicates": 0, "retries": 0}
        for start in range(0, len(events), ACTIONS_PER_POST):
            chunk = {"events": events[start : start + ACTIONS_PER_POST]}
            deadline, wait = time.monotonic() + self.retry_for_s, 0.2
            while True:
                try:
                    response = self.client.post(f"{self.actions_url}/v1/actions", json=chunk)
                    if response.status_code == 202:
                        answer = response.json()
                        totals["accepted"] += answer["accepted"]
                        totals["duplicates"] += answer["duplicates"]
                        break
                    if response.status_code < 500:
                        raise EndpointError(f"the actions service refused a batch: {response.text[:500]}")
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:  # refused or reset: the service may be restarting
                    problem = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the actions service did not take a batch for {self.retry_for_s} s: {problem}")
                totals["retries"] += 1
                time.sleep(wait)
                wait = min(wait * 2, 2.0)
        return totals


def run_days(
    world_dir: Path,
    endpoints: PublicEndpoints,
    days: range,
    out_dir: Path,
    users: int | None = None,
    feed_size: int = 10,
    batch_users: int = 64,
    seed: int = 0,
    progress: Callable[[int, int, int], None] | None = None,
) -> list[dict]:
    """Serve the run's `days` (day 0 starts just after the world's last event) to the world's users through
    `endpoints`; `users`: a seeded sample of that many (default every user). Appends what was served and sent to
    `out_dir/served.parquet` and `out_dir/actions.parquet` (one file per day: day-<d>.parquet under each) and
    returns one summary per day. `progress(day, batch, batches)` after each batch."""
    world, truth = world_of(world_dir)
    ds = Dataset(world_dir)
    start_ms = int(ds.read("events", columns=["ts"])["ts"].max()) + 1
    people = _sample(ds, users, seed)
    # the whole schedule to the day after the last one asked for, and a page belongs to the day its time falls in
    # (a session begun late may run past midnight): a day's pages do not depend on how the run is cut into calls
    pages = visits(world, people, start_ms, days.stop + 1, seed)
    day_of = (pages["ts"].to_numpy() - start_ms) // DAY_MS
    out_dir = Path(out_dir)
    summaries = []
    for day in days:
        today = pages[day_of == day].reset_index(drop=True)
        summaries.append(_serve_day(truth, endpoints, today, day, out_dir, feed_size, batch_users, seed, progress))
        summaries[-1]["start_ms"] = start_ms + day * DAY_MS
    return summaries


def _serve_day(truth, endpoints: PublicEndpoints, pages: pd.DataFrame, day: int, out_dir: Path, feed_size: int,
               batch_users: int, seed: int, progress) -> dict:  # fmt: skip
    served, sent = [], []
    failed, totals = 0, {"accepted": 0, "duplicates": 0, "retries": 0}
    groups = batches(pages.assign(arm=0), batch_users)
    for done, positions in enumerate(groups, start=1):
        batch = pages.iloc[positions]
        users, ts = batch["user_id"].to_numpy(), batch["ts"].to_numpy()
        predictions = endpoints.feeds(users, feed_size, ts)
        if predictions is None:
            failed += len(batch)
            continue
        feeds = [np.array([p["pin_id"] for p in pred["pins"]], dtype=np.int64) for pred in predictions]
        request_ids = np.array([pred["request_id"] for pred in predictions], dtype=np.int64)
        events = act(truth, seed, users, feeds, ts, request_ids)
        actions = events[events["action"] != "impression"].drop(columns="page")
        posted = [
            {**row, "event_id": f"{row['request_id']}:{row['pin_id']}:{row['action']}"}
            for row in actions.to_dict("records")
        ]
        for key, value in endpoints.send(posted).items():
            totals[key] += value
        sizes = [len(f) for f in feeds]
        served.append(pd.DataFrame({
            "user_id": np.repeat(users, sizes),
            "pin_id": np.concatenate(feeds) if feeds else np.zeros(0, dtype=np.int64),
            "request_id": np.repeat(request_ids, sizes),
            "ts": np.repeat(ts, sizes),
            "mode": np.repeat([p["mode"] for p in predictions], sizes),
        }))  # fmt: skip
        sent.append(actions)
        if progress:
            progress(day, done, len(groups))
    served_frame = _concat(served, ["user_id", "pin_id", "request_id", "ts", "mode"])
    sent_frame = _concat(sent, ["user_id", "pin_id", "action", "ts", "request_id", "surface"])
    for name, frame in (("served", served_frame), ("actions", sent_frame)):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / f"day-{day}.parquet", index=False)
    summary = {
        "day": day,
        "pages": len(pages),
        "failed_feeds": failed,
        "impressions": len(served_frame),
        "actions": {a: int((sent_frame["action"] == a).sum()) for a in ("click", "repin", "hide")},
        **totals,
    }
    with open(out_dir / "days.jsonl", "a") as fh:
        fh.write(json.dumps(summary) + "\n")
    return summary


def _sample(ds: Dataset, n: int | None, seed: int) -> pd.DataFrame:
    """The users who take part (columns user_id, segment as an index into SEGMENTS): all, or `n` drawn by seed."""
    users = ds.read("users", columns=["user_id", "segment"])
    users = users.assign(segment=users["segment"].map({s: i for i, s in enumerate(SEGMENTS)}).astype(np.int64))
    if n is not None and n < len(users):
        users = users.sample(n=n, random_state=np.random.default_rng([seed, 4]))
    return users.sort_values("user_id").reset_index(drop=True)


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def read_run(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What a run served and sent over all its days so far: (impressions, actions)."""
    out_dir = Path(out_dir)
    return tuple(  # type: ignore[return-value]
        pd.concat([pd.read_parquet(p) for p in sorted((out_dir / name).glob("day-*.parquet"))], ignore_index=True)
        for name in ("served", "actions")
    )
