"""The realtime user-action sequence (seed 003): a user's last N engagement actions, newest first.

One definition for every path: training data asks for the sequence at each impression's request time, the online
store is filled with the sequence as of "now", and both call `sequences_at`. Only actions strictly before the
asked-for time are included, so a training example never sees its own outcome (no leakage).

Padding: pin id -1, action 0 (index of "impression", which never appears in a sequence), timestamp 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.schema import ACTIONS, PAD_ACTION, PAD_PIN, SEQ_LEN, SEQUENCE_ACTIONS  # noqa: F401  (re-exported)

_TS_BITS = 40  # about 34 years of milliseconds relative to the earliest time involved
_MAX_USER = 1 << (63 - _TS_BITS)


@dataclass
class Sequences:
    """Arrays of shape [N, L] (newest first) and lengths [N]."""

    pin_ids: np.ndarray  # int64, PAD_PIN where empty
    actions: np.ndarray  # int8 index into contracts.ACTIONS, PAD_ACTION where empty
    ts: np.ndarray  # int64 epoch ms, 0 where empty
    lengths: np.ndarray  # int64

    def row(self, i: int) -> dict:
        n = int(self.lengths[i])
        return {
            "pin_ids": self.pin_ids[i, :n].tolist(),
            "actions": [ACTIONS[a] for a in self.actions[i, :n]],
            "ts": self.ts[i, :n].tolist(),
        }


class ActionLog:
    """Engagement actions sorted by (user, time), indexed so sequences for many (user, time) pairs are cheap."""

    def __init__(self, events: pd.DataFrame):
        action = events["action"]
        mask = action.isin(SEQUENCE_ACTIONS).to_numpy()
        user = events["user_id"].to_numpy()[mask].astype(np.int64)
        ts = events["ts"].to_numpy()[mask].astype(np.int64)
        pin = events["pin_id"].to_numpy()[mask].astype(np.int64)
        codes = pd.Categorical(action[mask], categories=ACTIONS).codes.astype(np.int8)
        self.ts0 = int(ts.min()) if len(ts) else 0
        order = np.lexsort((pin, ts, user))  # ties in time broken by pin id: deterministic
        self.user, self.ts, self.pin, self.action = user[order], ts[order], pin[order], codes[order]
        self.key = self._key(self.user, self.ts)

    def _key(self, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        rel = ts - self.ts0
        if len(user) and (user.max() >= _MAX_USER or user.min() < 0):
            raise ValueError(f"user ids must lie in [0, {_MAX_USER}) for the sequence index")
        rel = np.clip(rel, 0, (1 << _TS_BITS) - 1)  # before the first action: nothing to return anyway
        return (user << _TS_BITS) | rel

    def _bounds(self, users: np.ndarray, at_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query, the index range of the user's actions with ts < at_ts: [lo, hi)."""
        lo = np.searchsorted(self.key, users << _TS_BITS, side="left")
        # strictly before at_ts: actions at exactly at_ts are excluded (their key equals the query key)
        hi = np.searchsorted(self.key, self._key(users, at_ts), side="left")
        return lo, np.where(at_ts - self.ts0 < 0, lo, hi)

    def lengths_at(self, users: np.ndarray, at_ts: np.ndarray, max_len: int = SEQ_LEN) -> np.ndarray:
        """How long each sequence `sequences_at` would return is, without building them (cheap for millions)."""
        lo, hi = self._bounds(np.asarray(users, dtype=np.int64), np.asarray(at_ts, dtype=np.int64))
        return np.minimum(hi - lo, max_len).astype(np.int64)

    def sequences_at(self, users: np.ndarray, at_ts: np.ndarray, max_len: int = SEQ_LEN) -> Sequences:
        """The last `max_len` actions of each user with ts < at_ts, newest first."""
        users = np.asarray(users, dtype=np.int64)
        at_ts = np.asarray(at_ts, dtype=np.int64)
        lo, hi = self._bounds(users, at_ts)
        idx = hi[:, None] - 1 - np.arange(max_len)[None, :]
        valid = idx >= lo[:, None]
        safe = np.where(valid, idx, 0)
        if len(self.key) == 0:
            valid = np.zeros_like(valid)
            safe = np.zeros_like(safe)
            empty = np.zeros(1, dtype=np.int64)
            pin, act, ts = empty, empty.astype(np.int8), empty
        else:
            pin, act, ts = self.pin, self.action, self.ts
        return Sequences(
            pin_ids=np.where(valid, pin[safe], PAD_PIN),
            actions=np.where(valid, act[safe], PAD_ACTION).astype(np.int8),
            ts=np.where(valid, ts[safe], 0),
            lengths=valid.sum(axis=1).astype(np.int64),
        )


class LeakageError(ValueError):
    """A sequence holds an action at or after the time it was asked for: the example would see its own future."""


def assert_before(seq: Sequences, at_ts) -> None:
    """Raise `LeakageError` if any non-padded element of row i has ts >= at_ts[i].

    `sequences_at` guarantees this by construction; example builders call it anyway so that a future change to how
    sequences are cut (a new source, an off-by-one, `<=` for `<`) fails loudly instead of training on the outcome.
    An element is non-padded if it lies within its row's length or carries a pin id (so a row whose length
    understates its content is checked too). One vectorised pass: cheap next to building the sequences.
    """
    at_ts = np.asarray(at_ts, dtype=np.int64)
    if at_ts.shape != seq.lengths.shape:
        raise ValueError(f"at_ts has shape {at_ts.shape}, expected one time per row {seq.lengths.shape}")
    filled = np.arange(seq.ts.shape[1])[None, :] < seq.lengths[:, None]
    filled |= seq.pin_ids != PAD_PIN
    bad = seq.ts >= at_ts[:, None]
    bad &= filled
    if not bad.any():
        return
    i, j = (int(x) for x in np.argwhere(bad)[0])  # the first offending element in row-major order
    rows = int(bad.any(axis=1).sum())
    raise LeakageError(
        f"sequence leaks the future: row {i} element {j} (pin {int(seq.pin_ids[i, j])}, "
        f"action {ACTIONS[int(seq.actions[i, j])]}, ts {int(seq.ts[i, j])}) is not before the row's time "
        f"{int(at_ts[i])}; {rows} of {len(at_ts)} rows leak"
    )


def sequences_at(events: pd.DataFrame, users, at_ts, max_len: int = SEQ_LEN) -> Sequences:
    """Convenience for one query batch; build an ActionLog once when asking many times."""
    return ActionLog(events).sequences_at(users, at_ts, max_len)
