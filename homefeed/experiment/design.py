"""An experiment's design: its arms, which user sees which arm, and when each user opens their homefeed.

Two designs:
    split   a live A/B test: users are dealt out to the arms by a seeded shuffle within each segment, so every arm
            gets the same mix of core and non-core users, and a user keeps their arm for the whole experiment;
    paired  what only a simulator can run: every sampled user is served by every arm, from the same starting state
            (each arm keeps its own online store), on the same visits, with the same random draws for the same page
            (users.py). An arm's effect is then measured on the same users, so user-to-user differences, which
            dominate a split test's intervals, cancel; it is the counterfactual a live test estimates.
Visits follow the world's own traffic model
(components/data/world/traffic.py): sessions per day by segment (`segment_activity`), a few pages per session
(`requests_per_session`) minutes apart. A page is one homefeed request; its impressions are logged 250 ms apart.

Example:
    cfg = ExperimentConfig(days=3, users_per_arm=200)
    arms = assign_arms(users, segments, cfg)        # columns user_id, segment, arm
    pages = schedule(world_cfg, users, segments, start_ms, cfg)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from components.data.contracts import SEGMENTS
from components.data.world.config import DAY_MS, WorldConfig

CORE = SEGMENTS.index("core")
PAGE_GAP_MIN_MS = 30_000  # as traffic.make_requests: pages of a session 30 s + Exp(90 s) apart
PAGE_GAP_MEAN_MS = 90_000
DESIGNS = ("paired", "split")


@dataclass(frozen=True)
class Arm:
    """One arm: its name and the ranking model its predictors serve (retrieval is shared by every arm)."""

    name: str
    ranking_dir: str


@dataclass(frozen=True)
class ExperimentConfig:
    days: int = 3
    users_per_arm: int = 200  # sampled from the world's users, stratified by segment
    design: str = "paired"  # or "split" (see the module docstring)
    feed_size: int = 10  # pins per page: the homefeed request's `n`
    candidates: int = 200  # retrieval candidates the homefeed ranks
    batch_users: int = 64  # pages of different users served together (one homefeed request per arm)
    seed: int = 0
    # Sessions per user and day scale the world's segment_activity: an experiment's days are the world's days.
    activity_scale: float = 1.0
    arms: tuple[Arm, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.days < 1 or self.users_per_arm < 1 or self.feed_size < 1 or self.batch_users < 1:
            raise ValueError("days, users_per_arm, feed_size and batch_users must be >= 1")
        if self.design not in DESIGNS:
            raise ValueError(f"design must be one of {', '.join(DESIGNS)}; got {self.design!r}")
        if self.activity_scale <= 0:
            raise ValueError(f"activity_scale must be > 0, got {self.activity_scale}")
        names = [a.name for a in self.arms]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"an experiment needs at least two arms with distinct names, got {names}")


def assign_arms(user_ids: np.ndarray, segments: np.ndarray, cfg: ExperimentConfig) -> pd.DataFrame:
    """`users_per_arm` users per arm, drawn and dealt out within each segment (columns user_id, segment, arm).

    Each segment's users are shuffled and dealt round-robin over the arms, from a segment-specific start, so the
    arms' segment mixes differ by at most one user per segment; then each arm keeps the first `users_per_arm` in
    shuffled order. In the paired design, the users the first arm drew are every arm's users. The same seed gives
    the same assignment.
    """
    rng = np.random.default_rng([cfg.seed, 1])
    n_arms = len(cfg.arms)
    rows = []
    for seg in np.unique(segments):
        members = rng.permutation(user_ids[segments == seg])
        arm = (np.arange(len(members)) + rng.integers(n_arms)) % n_arms
        rows.append(pd.DataFrame({"user_id": members, "segment": seg, "arm": arm, "order": rng.random(len(members))}))
    frame = pd.concat(rows).sort_values("order", kind="stable")
    frame = frame.groupby("arm", sort=True).head(cfg.users_per_arm)
    short = frame.groupby("arm").size()
    if len(short) < n_arms or (short < cfg.users_per_arm).any():
        raise ValueError(f"the world has too few users for {n_arms} arms of {cfg.users_per_arm} users")
    if cfg.design == "paired":
        first = frame[frame["arm"] == 0]
        frame = pd.concat([first.assign(arm=a) for a in range(n_arms)])
    out = frame.drop(columns="order").sort_values(["arm", "user_id"]).reset_index(drop=True)
    return out.astype({"user_id": np.int64, "segment": np.int64, "arm": np.int64})


def schedule(world: WorldConfig, assigned: pd.DataFrame, start_ms: int, cfg: ExperimentConfig) -> pd.DataFrame:
    """Every page request of the experiment, in time order: columns user_id, arm, segment, day, session, page, ts.

    Day d covers [start_ms + d days, start_ms + d + 1 days). A user opens Poisson(segment_activity * scale) sessions
    a day at uniform times; a session has 1 + Poisson(requests_per_session - 1) pages. A page that would fall past
    the experiment's end is dropped. In the paired design every arm's copy of a user gets the same pages.
    """
    if cfg.design == "paired":
        first = schedule(world, assigned[assigned["arm"] == 0], start_ms, replace(cfg, design="split"))
        pages = pd.concat([first.assign(arm=a) for a in range(len(cfg.arms))], ignore_index=True)
        return pages.sort_values(["ts", "user_id", "arm"], kind="stable").reset_index(drop=True)
    return visits(world, assigned, start_ms, cfg.days, cfg.seed, cfg.activity_scale)


def visits(
    world: WorldConfig, users_: pd.DataFrame, start_ms: int, days: int, seed: int, activity_scale: float = 1.0
) -> pd.DataFrame:
    """The pages `users_` (columns user_id, segment as an index into SEGMENTS, and arm, 0 when absent) request over
    `days` days from `start_ms`, in time order, drawn by the world's traffic model as `schedule` describes. Day d's
    pages are the same whatever the number of days asked for beyond it (the days are drawn in order)."""
    rng = np.random.default_rng([seed, 2])
    activity = np.array([world.segment_activity[s] for s in SEGMENTS]) * activity_scale
    users = users_["user_id"].to_numpy()
    seg = users_["segment"].to_numpy()
    arm = users_["arm"].to_numpy() if "arm" in users_ else np.zeros(len(users), dtype=np.int64)
    parts = []
    session_ids = 0
    for day in range(days):
        n_sessions = rng.poisson(activity[seg])
        who = np.repeat(np.arange(len(users)), n_sessions)
        starts = start_ms + day * DAY_MS + (rng.random(len(who)) * DAY_MS).astype(np.int64)
        n_pages = 1 + rng.poisson(world.requests_per_session - 1.0, size=len(who))
        page_of = np.concatenate([np.arange(n) for n in n_pages]) if len(who) else np.zeros(0, dtype=np.int64)
        session = np.repeat(np.arange(len(who)) + session_ids, n_pages)
        gaps = PAGE_GAP_MIN_MS + rng.exponential(PAGE_GAP_MEAN_MS, size=len(session)).astype(np.int64)
        gaps[page_of == 0] = 0
        elapsed = np.cumsum(gaps)
        first = np.cumsum(n_pages) - n_pages
        offset = elapsed - np.repeat(elapsed[first], n_pages) if len(session) else elapsed
        idx = np.repeat(who, n_pages)
        parts.append(
            pd.DataFrame(
                {
                    "user_id": users[idx],
                    "arm": arm[idx],
                    "segment": seg[idx],
                    "day": day,
                    "session": session,
                    "page": page_of,
                    "ts": np.repeat(starts, n_pages) + offset,
                }
            )  # fmt: skip
        )
        session_ids += len(who)
    pages = pd.concat(parts, ignore_index=True)
    pages = pages[pages["ts"] < start_ms + days * DAY_MS]
    return pages.sort_values(["ts", "user_id"], kind="stable").reset_index(drop=True)


def batches(pages: pd.DataFrame, size: int) -> list[np.ndarray]:
    """Row positions of `pages` (in time order) cut into batches of at most `size` pages of distinct users (of
    distinct (arm, user) pairs: the paired design's copies of a user are distinct users), each user's pages in
    their time order over the batches: a user's next page is requested only after the previous page's actions
    reached the online store.

    Users share no state during an experiment (the stream keeps a sequence per user and arm, the corpus is fixed),
    so only each user's own order matters. Pages are taken by their place in the user's visits (every user's first page,
    then every second page, ...) and by time within that; a batch can then hold a user's third page beside another
    user's first. Strict time order across users would cut a batch wherever a user comes back, and a session's
    pages are minutes apart, which left batches of a few pages.
    """
    user = list(zip(pages["arm"].to_numpy(), pages["user_id"].to_numpy(), strict=True))
    visit = pages.groupby(["arm", "user_id"], sort=False).cumcount().to_numpy()
    order = np.lexsort((np.arange(len(pages)), visit))
    out, current, seen = [], [], set()
    for pos in order:
        if len(current) == size or user[pos] in seen:
            out.append(np.array(current))
            current, seen = [], set()
        current.append(pos)
        seen.add(user[pos])
    if current:
        out.append(np.array(current))
    return out


def is_core(segment: np.ndarray) -> np.ndarray:
    return np.asarray(segment) == CORE
