"""Homefeed traffic: sessions of requests, a slate of impressions per request chosen by the logging policy, and
the actions users take on them, drawn from the ground truth.

Work is vectorized over requests in chunks; each chunk has its own random stream derived from the seed and the
chunk index, so the output does not depend on how fast anything ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from components.data.contracts import SEGMENTS
from components.data.world.config import DAY_MS, WorldConfig
from components.data.world.population import Pins, Users
from components.data.world.truth import GroundTruth, _inverse_cdf

_CHUNK_REQUESTS = 100_000
_EXPECTED_ACTIONS_PER_IMPRESSION = 0.08  # used only to size the number of requests for the event target
IMPRESSION_GAP_MS = 250  # impressions of one slate are logged this far apart, in slot order


@dataclass
class Requests:
    user: np.ndarray  # [R]
    ts: np.ndarray  # [R] sorted ascending; the request id is the position


@dataclass
class EventColumns:
    user_id: np.ndarray
    pin_id: np.ndarray
    action: np.ndarray  # int8 index into contracts.ACTIONS: 0 impression, 1 click, 2 repin, 3 hide
    ts: np.ndarray
    request_id: np.ndarray


def make_requests(cfg: WorldConfig, rng: np.random.Generator, users: Users) -> Requests:
    """Sessions start on users' active days with a diurnal profile; each holds a few requests minutes apart."""
    per_request = cfg.slate_size * (1.0 + _EXPECTED_ACTIONS_PER_IMPRESSION)
    n_sessions = max(1, round(cfg.n_events / per_request / cfg.requests_per_session))
    end = cfg.end_ms
    active_ms = np.maximum(end - users.active_from_ms, 0)
    rate = np.array([cfg.segment_activity[s] for s in SEGMENTS])[users.segment]
    weight = rate * active_ms
    session_user = rng.choice(len(weight), size=n_sessions, p=weight / weight.sum())
    start = _diurnal_times(rng, users.active_from_ms[session_user], end)

    n_req = 1 + rng.poisson(cfg.requests_per_session - 1.0, size=n_sessions)
    user = np.repeat(session_user, n_req)
    session_start = np.repeat(start, n_req)
    first = np.repeat(np.cumsum(n_req) - n_req, n_req)
    gaps = (30_000 + rng.exponential(90_000, size=len(user))).astype(np.int64)
    gaps[first == np.arange(len(user))] = 0
    elapsed = np.cumsum(gaps)
    offset = elapsed - np.repeat(elapsed[np.cumsum(n_req) - n_req], n_req)  # time since the session started
    ts = session_start + offset
    keep = ts < end
    user, ts = user[keep], ts[keep]
    order = np.lexsort((user, ts))
    return Requests(user=user[order], ts=ts[order])


def _diurnal_times(rng: np.random.Generator, lo: np.ndarray, hi: int) -> np.ndarray:
    """Uniform times in [lo, hi), thinned by an evening-peaked hour-of-day profile (rejection sampling)."""
    out = np.empty(len(lo), dtype=np.int64)
    todo = np.arange(len(lo))
    while len(todo):
        t = lo[todo] + (rng.random(len(todo)) * (hi - lo[todo])).astype(np.int64)
        hour = (t % DAY_MS) / 3_600_000
        accept = rng.random(len(todo)) < (1.0 + 0.6 * np.cos(2 * np.pi * (hour - 20.0) / 24.0)) / 1.6
        out[todo[accept]] = t[accept]
        todo = todo[~accept]
    return out


class SlatePolicy:
    """The logging policy: each slot comes from the popular, interest-matched or random source."""

    def __init__(self, cfg: WorldConfig, pins: Pins, users: Users):
        pol = cfg.logging_policy
        shares = np.array([pol.popular, pol.interest_matched, pol.random], dtype=np.float64)
        self.source_cdf = np.cumsum(shares / shares.sum())
        self.knowledge = pol.knowledge
        self.pop_cdf = np.cumsum(pins.popularity) / pins.popularity.sum()
        self.created = pins.created_ms
        self.n_pins = len(pins.created_ms)
        self.preexisting = np.flatnonzero(pins.created_ms < cfg.start_ms)
        self.by_interest = []
        for k in range(cfg.n_interests):
            members = np.flatnonzero(pins.interest == k)
            w = pins.popularity[members]
            self.by_interest.append((members, np.cumsum(w) / w.sum() if len(members) else w))
        k = cfg.n_interests
        declared = np.zeros((len(users.declared), k), dtype=np.float32)
        for i, interests in enumerate(users.declared):
            declared[i, interests] = 1.0 / len(interests)
        self.declared = declared

    def slate(self, rng: np.random.Generator, req_user, req_ts, taste, slate_size: int) -> np.ndarray:
        """[R, slate_size] pin ids, no pin twice in a slate, none created after its request."""
        r = len(req_user)
        slot_req = np.repeat(np.arange(r), slate_size)
        source = np.searchsorted(self.source_cdf, rng.random(r * slate_size), side="right")
        pins = np.empty(r * slate_size, dtype=np.int64)
        pop = source == 0
        pins[pop] = np.searchsorted(self.pop_cdf, rng.random(pop.sum()), side="right")
        matched = source == 1
        belief = (1.0 - self.knowledge) * self.declared[req_user] + self.knowledge * taste
        interest = _inverse_cdf(belief[slot_req[matched]], rng.random(matched.sum()))
        pins[matched] = self._from_interests(rng, interest)
        rand = source == 2
        pins[rand] = rng.integers(0, self.n_pins, size=rand.sum())
        pins = np.minimum(pins, self.n_pins - 1)
        self._repair(rng, pins, slot_req, req_ts)
        return pins.reshape(r, slate_size)

    def _from_interests(self, rng, interest: np.ndarray) -> np.ndarray:
        out = np.empty(len(interest), dtype=np.int64)
        u = rng.random(len(interest))
        for k, (members, cdf) in enumerate(self.by_interest):
            sel = interest == k
            if not sel.any():
                continue
            if len(members) == 0:  # an interest with no pins: fall back to a random pin
                out[sel] = rng.integers(0, self.n_pins, size=sel.sum())
                continue
            out[sel] = members[np.minimum(np.searchsorted(cdf, u[sel], side="right"), len(members) - 1)]
        return out

    def _repair(self, rng, pins: np.ndarray, slot_req: np.ndarray, req_ts: np.ndarray) -> None:
        """Replace slots holding a pin not yet created or already in the slate with random eligible pins."""
        for _ in range(20):
            bad = self.created[pins] > req_ts[slot_req]
            key = slot_req * self.n_pins + pins
            _, first = np.unique(key, return_index=True)
            dup = np.ones(len(pins), dtype=bool)
            dup[first] = False
            bad |= dup
            if not bad.any():
                return
            pins[bad] = rng.integers(0, self.n_pins, size=bad.sum())
        # whatever is still bad after 20 rounds gets a pre-existing pin (created before the span), distinct per slot
        bad = self.created[pins] > req_ts[slot_req]
        pins[bad] = self.preexisting[rng.integers(0, len(self.preexisting), size=bad.sum())]


def make_events(
    cfg: WorldConfig,
    seed_seq: np.random.SeedSequence,
    requests: Requests,
    policy: SlatePolicy,
    truth: GroundTruth,
    on_chunk: Callable[[int], None] | None = None,
) -> EventColumns:
    """Impressions for every slate, plus one action at most per impression, drawn from the ground truth."""
    n = len(requests.user)
    parts: list[EventColumns] = []
    for c, lo in enumerate(range(0, n, _CHUNK_REQUESTS)):
        chunk_seed = np.random.SeedSequence(entropy=seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, c))
        rng = np.random.default_rng(chunk_seed)
        hi = min(n, lo + _CHUNK_REQUESTS)
        parts.append(_chunk_events(cfg, rng, lo, requests.user[lo:hi], requests.ts[lo:hi], policy, truth))
        if on_chunk:
            on_chunk(hi - lo)
    cols = {f: np.concatenate([getattr(p, f) for p in parts]) for f in EventColumns.__dataclass_fields__}
    order = np.lexsort((cols["action"], cols["request_id"], cols["ts"]))
    return EventColumns(**{f: v[order] for f, v in cols.items()})


def _chunk_events(cfg, rng, first_request, user, ts, policy: SlatePolicy, truth: GroundTruth) -> EventColumns:
    s = cfg.slate_size
    taste = truth.taste_at(user, ts)
    intent = truth.intent_at(user, ts, taste)
    slate = policy.slate(rng, user, ts, taste, s)  # [r, s]
    r = len(user)
    slot_req = np.repeat(np.arange(r), s)
    imp_user = user[slot_req]
    imp_pin = slate.ravel()
    imp_ts = ts[slot_req] + np.tile(np.arange(s, dtype=np.int64) * IMPRESSION_GAP_MS, r)
    x = truth.logits_given_state(taste[slot_req], intent[slot_req], imp_pin, imp_ts)
    probs = truth.outcome_probs(x, imp_user)
    outcome = (rng.random(len(x))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)  # 0 none, 1 click, 2 repin, 3 hide
    acted = np.flatnonzero(outcome > 0)
    act_ts = imp_ts[acted] + 1_000 + rng.exponential(15_000, size=len(acted)).astype(np.int64)
    request_id = first_request + slot_req
    return EventColumns(
        user_id=np.concatenate([imp_user, imp_user[acted]]),
        pin_id=np.concatenate([imp_pin, imp_pin[acted]]),
        action=np.concatenate([np.zeros(len(imp_pin), dtype=np.int8), outcome[acted].astype(np.int8)]),
        ts=np.concatenate([imp_ts, act_ts]),
        request_id=np.concatenate([request_id, request_id[acted]]).astype(np.int64),
    )
