"""The simulated users of an experiment: what they do with the pins a feed shows them, drawn from the ground truth.

The same draw as the world's logged traffic (components/data/world/traffic.py), with the served feed in place of
the logging policy's slate: per page, the user's taste and short-term intent at the page's time; per impression,
one multinomial draw over none / click / repin / hide from GroundTruth.outcome_probs. Impressions of a page are
250 ms apart in feed order, an action follows its impression by 1 s + Exp(15 s). There is no position effect: a
user looks at every pin of the page.

The draws are common random numbers: a page's uniforms and delays come from a generator seeded by (seed, user, the
page's time), one per feed slot. The paired design's copies of a user, shown the same pins on the same page, act
the same; shown other pins, they act on them with the same dice, so the arms differ by what they served and not
by the luck of the draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.data.contracts import ACTIONS, HOMEFEED_SURFACE
from components.data.world.traffic import IMPRESSION_GAP_MS
from components.data.world.truth import GroundTruth

# Outcome k of GroundTruth.outcome_probs (0 none, 1 click, 2 repin, 3 hide) is logged as action ACTIONS[k] for k >= 1:
# the two orders agree (tests/unit/test_experiment.py).
_ACTION_OF_OUTCOME = np.array(ACTIONS)


def act(
    truth: GroundTruth,
    seed: int,
    users: np.ndarray,
    feeds: list[np.ndarray],
    page_ts: np.ndarray,
    request_ids: np.ndarray,
) -> pd.DataFrame:
    """The events of one batch of pages: page i showed `feeds[i]` (pin ids, in feed order) to `users[i]` at
    `page_ts[i]`. Returns the canonical event columns (user_id, pin_id, action, ts, request_id, surface), impressions and
    actions, sorted by time; plus `page` (the index i) for the caller's per-page tallies."""
    sizes = np.array([len(f) for f in feeds], dtype=np.int64)
    page = np.repeat(np.arange(len(feeds)), sizes)
    if not len(page):
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in ("user_id", "pin_id", "ts", "request_id", "page")})
    slot = np.concatenate([np.arange(n) for n in sizes])
    user = np.asarray(users, dtype=np.int64)[page]
    pin = np.concatenate(feeds).astype(np.int64)
    ts = np.asarray(page_ts, dtype=np.int64)[page] + slot * IMPRESSION_GAP_MS
    # taste and intent once per page (at the page's time), as the world's traffic does per request
    taste = truth.taste_at(np.asarray(users), np.asarray(page_ts))
    intent = truth.intent_at(np.asarray(users), np.asarray(page_ts), taste)
    x = truth.logits_given_state(taste[page], intent[page], pin, ts)
    probs = truth.outcome_probs(x, user)
    uniform, delay = _page_draws(seed, users, page_ts, sizes)
    outcome = (uniform[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    acted = np.flatnonzero(outcome > 0)
    act_ts = ts[acted] + 1_000 + delay[acted].astype(np.int64)
    events = pd.DataFrame({
        "user_id": np.concatenate([user, user[acted]]),
        "pin_id": np.concatenate([pin, pin[acted]]),
        "action": np.concatenate([np.full(len(pin), "impression"), _ACTION_OF_OUTCOME[outcome[acted]]]),
        "ts": np.concatenate([ts, act_ts]),
        "request_id": np.asarray(request_ids, dtype=np.int64)[np.concatenate([page, page[acted]])],
        "surface": HOMEFEED_SURFACE,
        "page": np.concatenate([page, page[acted]]),
    })  # fmt: skip
    return events.sort_values(["ts", "user_id"], kind="stable").reset_index(drop=True)


def _page_draws(seed: int, users: np.ndarray, page_ts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per impression, in page order: a uniform for the outcome and an Exp(15 s) delay for an action, from the
    page's own generator (the common random numbers above)."""
    uniform, delay = [], []
    for user, ts, n in zip(np.asarray(users), np.asarray(page_ts), sizes, strict=True):
        g = np.random.default_rng([seed, 3, int(user), int(ts)])
        uniform.append(g.random(n))
        delay.append(g.exponential(15_000, size=n))
    return np.concatenate(uniform), np.concatenate(delay)
