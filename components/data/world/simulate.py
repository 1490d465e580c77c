"""`simulate_world`: build a synthetic Homefeed world and write it as a dataset (components/data/dataset.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.data.contracts import ACTIONS, HOMEFEED_SURFACE
from components.data.dataset import WriteReport, validate_and_write
from components.data.world.config import DAY_MS, WorldConfig
from components.data.world.population import make_interests, make_pins, make_users
from components.data.world.traffic import EventColumns, SlatePolicy, make_events, make_requests
from components.data.world.truth import GroundTruth

# progress(stage, done, total): called as work completes, so a CLI can draw bars and a pipeline can log.
Progress = Callable[[str, int, int], None]

STAGES = ("population", "requests", "events", "write")


def simulate_world(cfg: WorldConfig, out: Path, progress: Progress | None = None) -> WriteReport:
    """Generate the world described by `cfg` into directory `out`. The same config gives the same bytes."""
    report = progress or (lambda stage, done, total: None)
    out = Path(out)
    seeds = np.random.SeedSequence(cfg.seed).spawn(5)
    rngs = [np.random.default_rng(s) for s in seeds[:4]]

    report("population", 0, 3)
    interests, centroids, interest_pop = make_interests(cfg, rngs[0])
    pins = make_pins(cfg, rngs[1], centroids, interest_pop)
    report("population", 2, 3)
    users = make_users(cfg, rngs[2], interest_pop)
    truth = _ground_truth(cfg, rngs[3], centroids, interest_pop, pins, users)
    report("population", 3, 3)

    requests = make_requests(cfg, rngs[3], users)
    report("requests", 1, 1)
    policy = SlatePolicy(cfg, pins, users)
    total, done = len(requests.user), 0

    def on_chunk(n: int) -> None:
        nonlocal done
        done += n
        report("events", done, total)

    events = make_events(cfg, seeds[4], requests, policy, truth, on_chunk)

    report("write", 0, 1)
    out.mkdir(parents=True, exist_ok=True)
    truth.save(out / "ground_truth.npz")
    manifest = {
        "source": "world",
        "config": cfg.model_dump(mode="json"),
        "n_requests": int(len(requests.user)),
    }
    tables = {"interests": interests, "pins": pins.table, "users": users.table, "events": _events_table(events)}
    result = validate_and_write(out, tables, manifest)
    report("write", 1, 1)
    return result


def _events_table(ev: EventColumns) -> pa.Table:
    # Dictionary-encoded strings: validation checks the 4 actions once, not 10M times.
    action = pa.DictionaryArray.from_arrays(pa.array(ev.action, pa.int8()), pa.array(ACTIONS, pa.string()))
    surface = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(len(ev.ts), dtype=np.int8)), pa.array([HOMEFEED_SURFACE], pa.string())
    )
    return pa.table(
        {
            "user_id": ev.user_id,
            "pin_id": ev.pin_id,
            "action": action,
            "ts": ev.ts,
            "request_id": ev.request_id,
            "surface": surface,
        }
    )


def _ground_truth(cfg: WorldConfig, rng, centroids, interest_pop, pins, users) -> GroundTruth:
    k = cfg.n_interests
    shift_target = np.zeros(k, dtype=np.float32)
    shifted = np.zeros(cfg.n_users, dtype=bool)
    params = {
        "start_ms": cfg.start_ms,
        "intent_ms": int(cfg.intent_minutes * 60_000),
        "intent_weight": cfg.intent_weight,
        "half_life_days": cfg.freshness_half_life_days,
        "drift_per_day": cfg.taste_drift_per_day,
        "segment_propensity": dict(cfg.segment_propensity),
        "hash_key": int(np.random.SeedSequence(cfg.seed).generate_state(1, np.uint64)[0]),
        "shift_ms": None,
        "shift_strength": 0.0,
        "shift_interests": [],
    }
    shift = cfg.interest_shift
    if shift is not None:
        # default targets come from the less popular half, so the shift is visible against the usual mix
        tail = np.argsort(interest_pop)[: max(k // 2, shift.n_interests)]
        targets = shift.interests or sorted(rng.choice(tail, size=shift.n_interests, replace=False).tolist())
        shift_target[targets] = 1.0 / len(targets)
        shifted = rng.random(cfg.n_users) < shift.share_of_users
        params.update(
            shift_ms=cfg.start_ms + int(shift.day * DAY_MS),
            shift_strength=shift.strength,
            shift_interests=[int(t) for t in targets],
        )
    return GroundTruth(
        centroids=centroids,
        pin_latent=pins.latent,
        pin_interest=pins.interest,
        pin_quality=pins.quality,
        pin_created_ms=pins.created_ms,
        user_taste=users.taste,
        user_late_taste=users.late_taste,
        user_segment=users.segment.astype(np.int8),
        user_active_from_ms=users.active_from_ms,
        user_intent_phase_ms=users.intent_phase_ms,
        user_shifted=shifted,
        shift_target=shift_target,
        params=params,
    )
