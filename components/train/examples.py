"""Training and evaluation examples built from a dataset, point in time: every feature of an example is computed
from actions strictly before the example's own time (components/features/sequence.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.data.contracts import SEGMENTS
from components.data.dataset import Dataset
from components.features.sequence import ActionLog, assert_before

RETRIEVAL_SEQ_LEN = 20  # the user tower summarises the recent actions; ranking reads the full 100
POSITIVE_ACTIONS = ("click", "repin")
USER_INPUTS = ("user_id", "segment", "declared", "seq_pin_ids")  # `user_features`' keys, in the user tower's order


@dataclass
class Catalog:
    """What models need to know about the dataset's entities, as arrays indexed by id."""

    n_users: int
    n_pins: int
    n_interests: int
    content: np.ndarray  # [P, d] pin content embeddings (zeros where a pin has none)
    pin_interest: np.ndarray  # [P]
    user_segment: np.ndarray  # [U] index into SEGMENTS
    user_declared: np.ndarray  # [U, K] multi-hot

    @classmethod
    def load(cls, ds: Dataset) -> Catalog:
        pins = ds.read("pins", columns=["pin_id", "interest_id", "embedding"])
        users = ds.read("users", columns=["user_id", "segment", "declared_interests"])
        k = len(ds.read("interests"))
        n_pins, n_users = int(pins.pin_id.max()) + 1, int(users.user_id.max()) + 1
        dim = next((len(e) for e in pins.embedding if e is not None), 1)
        content = np.zeros((n_pins, dim), dtype=np.float32)
        has = pins.embedding.notna().to_numpy()
        if has.any():
            content[pins.pin_id.to_numpy()[has]] = np.stack(pins.embedding.to_numpy()[has])
        interest = pin_interests(pins, n_pins)
        segment = np.zeros(n_users, dtype=np.int64)
        segment[users.user_id.to_numpy()] = pd.Categorical(users.segment, categories=SEGMENTS).codes
        declared = np.zeros((n_users, k), dtype=np.float32)
        for uid, interests in zip(users.user_id.to_numpy(), users.declared_interests, strict=True):
            declared[uid, list(interests)] = 1.0
        return cls(n_users, n_pins, k, content, interest, segment, declared)


def pin_interests(pins: pd.DataFrame, n_pins: int) -> np.ndarray:
    """[n_pins] interest id per pin id from a pins table (pin_id, interest_id); 0 where a pin id has no row. Pins
    with ids >= n_pins (newer than a model's table) are left out."""
    interest = np.zeros(n_pins, dtype=np.int64)
    ids = pins.pin_id.to_numpy()
    keep = ids < n_pins
    interest[ids[keep]] = pins.interest_id.to_numpy()[keep]
    return interest


def user_features(cat: Catalog, log: ActionLog, users: np.ndarray, at_ts: np.ndarray) -> dict[str, np.ndarray]:
    seq = log.sequences_at(users, at_ts, RETRIEVAL_SEQ_LEN)
    assert_before(seq, at_ts)  # leakage guard: a sequence element at or after at_ts would be the example's future
    return {
        "user_id": users.astype(np.int64),
        "segment": cat.user_segment[users],
        "declared": cat.user_declared[users],
        "seq_pin_ids": seq.pin_ids,
    }


def request_times(ev: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """The time each row's request was answered: the first impression of its request id (the row's own time when the
    request has no impression, as for sequence files where each action is its own request). Serving builds the
    user's features once per request, so an engagement on slot 5 must not see a click on slot 2 of the same slate,
    which happened after the request was answered: examples take their features as of this time."""
    first = ev[ev.action == "impression"].groupby("request_id")["ts"].min()
    ts = first.reindex(rows.request_id).to_numpy()
    own = rows.ts.to_numpy()
    return np.where(np.isnan(ts), own, ts).astype(np.int64)


def sequence_age_hours(seq_ts: np.ndarray, request_ts: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """[N, L] float32 hours from each sequence action to its request (0 where empty): what TransAct's random time
    window mask reads. Training and serving both call this, so the unit cannot drift between them."""
    age = (np.asarray(request_ts, dtype=np.int64)[:, None] - seq_ts) / 3_600_000.0
    return np.where(filled, np.maximum(age, 0.0), 0.0).astype(np.float32)


EVENT_COLUMNS = ["user_id", "pin_id", "action", "ts", "request_id"]


def read_events(ds: Dataset) -> tuple[pd.DataFrame, ActionLog]:
    """The events once, and the action log built from them: every example builder takes both."""
    ev = ds.read("events", columns=EVENT_COLUMNS)
    return ev, ActionLog(ev)


def retrieval_examples(
    ev: pd.DataFrame, cat: Catalog, log: ActionLog, start_ms: int, end_ms: int
) -> dict[str, np.ndarray]:
    """Positive (user, pin) pairs: clicks and repins in [start_ms, end_ms), with the user as of the request."""
    pos = ev[ev.action.isin(POSITIVE_ACTIONS) & (ev.ts >= start_ms) & (ev.ts < end_ms)]
    users, pins = pos.user_id.to_numpy(), pos.pin_id.to_numpy()
    counts = np.bincount(pins, minlength=cat.n_pins).astype(np.float64)
    log_q = np.log(counts[pins] / counts.sum())  # how often the pin is sampled as an in-batch negative
    return {
        **user_features(cat, log, users, request_times(ev, pos)),
        "pin_id": pins.astype(np.int64),
        "interest": cat.pin_interest[pins],
        "log_q": log_q.astype(np.float32),
    }


def ranking_examples(
    ev: pd.DataFrame, cat: Catalog, log: ActionLog, start_ms: int, end_ms: int, max_examples: int | None, seed: int
) -> dict[str, np.ndarray]:
    """Impressions in [start_ms, end_ms) with labels [click, repin, hide] and the sequence at request time."""
    window = ev[(ev.ts >= start_ms) & (ev.ts < end_ms)]
    imp = window[window.action == "impression"]
    if max_examples is not None and len(imp) > max_examples:
        keep = np.sort(np.random.default_rng(seed).choice(len(imp), size=max_examples, replace=False))
        imp = imp.iloc[keep]
    acted = window[window.action != "impression"]
    labels = np.zeros((len(imp), 3), dtype=np.float32)
    key = pd.MultiIndex.from_frame(imp[["request_id", "pin_id"]])
    for j, action in enumerate(("click", "repin", "hide")):
        hit = acted[acted.action == action].set_index(["request_id", "pin_id"]).index
        labels[:, j] = key.isin(hit)
    users, pins = imp.user_id.to_numpy(), imp.pin_id.to_numpy()
    ts = request_times(ev, imp)
    seq = log.sequences_at(users, ts)
    assert_before(seq, ts)  # leakage guard: the sequence must hold only actions before the request's time
    return {
        "user_id": users.astype(np.int64),
        "segment": cat.user_segment[users],
        "pin_id": pins.astype(np.int64),
        "interest": cat.pin_interest[pins],
        "seq_pin_ids": seq.pin_ids,
        "seq_actions": seq.actions.astype(np.int64),
        "seq_age_h": sequence_age_hours(seq.ts, ts, seq.pin_ids >= 0),
        "request_id": imp.request_id.to_numpy(),
        "labels": labels,
    }
