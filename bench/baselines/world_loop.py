"""Baseline for the world benchmark: the same traffic process written the plain way, one request and one slot at
a time. Population, ground truth and request times are shared with the real generator, so the two differ only in
how the slates and actions are produced."""

from __future__ import annotations

import numpy as np

from components.data.world.config import WorldConfig
from components.data.world.population import Pins, Users
from components.data.world.traffic import IMPRESSION_GAP_MS, Requests, SlatePolicy
from components.data.world.truth import GroundTruth


def loop_events(
    cfg: WorldConfig, rng, requests: Requests, policy: SlatePolicy, truth: GroundTruth, pins: Pins, users: Users, n: int
) -> list[tuple]:
    events: list[tuple] = []
    for r in range(min(n, len(requests.user))):
        user, ts = int(requests.user[r]), int(requests.ts[r])
        taste = truth.taste_at(np.array([user]), np.array([ts]))
        intent = truth.intent_at(np.array([user]), np.array([ts]), taste)
        belief = (1 - policy.knowledge) * policy.declared[user] + policy.knowledge * taste[0]
        slate: list[int] = []
        while len(slate) < cfg.slate_size:
            source = int(np.searchsorted(policy.source_cdf, rng.random(), side="right"))
            if source == 0:
                pin = int(np.searchsorted(policy.pop_cdf, rng.random(), side="right"))
            elif source == 1:
                k = int(np.searchsorted(np.cumsum(belief), rng.random() * belief.sum(), side="right"))
                members, cdf = policy.by_interest[min(k, len(policy.by_interest) - 1)]
                if len(members) == 0:
                    continue
                pin = int(members[min(np.searchsorted(cdf, rng.random(), side="right"), len(members) - 1)])
            else:
                pin = int(rng.integers(0, policy.n_pins))
            pin = min(pin, policy.n_pins - 1)
            if pins.created_ms[pin] > ts or pin in slate:
                continue
            slate.append(pin)
        for pos, pin in enumerate(slate):
            t = ts + pos * IMPRESSION_GAP_MS
            x = truth.logits_given_state(taste, intent, np.array([pin]), np.array([t]))
            probs = truth.outcome_probs(x, np.array([user]))[0]
            outcome = int(rng.choice(4, p=probs / probs.sum()))
            events.append((user, pin, 0, t, r))
            if outcome:
                events.append((user, pin, outcome, t + 1_000 + int(rng.exponential(15_000)), r))
    events.sort(key=lambda e: (e[3], e[4], e[2]))
    return events
