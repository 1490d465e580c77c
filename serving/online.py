"""The models' user inputs read from the online store: one definition for the retrieval and ranking predictors.

A Feast row of the `retrieval` service (profile + realtime sequence, components/features/store.py) becomes the same
arrays the offline example builders make (components/train/examples.py): the segment as an index into
contracts.SEGMENTS, declared interests as a multi-hot vector, and the sequence newest first, padded with PAD_PIN /
PAD_ACTION / 0. The store is filled by `ActionLog.sequences_at` at the cut-off, so a user's online inputs equal the
offline ones at that cut-off, and the models see at serving time what they were trained on.

Example:
    users = online_users(store, [3, 7], n_interests=20, seq_len=100)
    users.seq_pin_ids.shape  # (2, 100)
    users.hidden[0]          # pins user 3 hid among their last 100 actions
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.errors import FeastError
from google.protobuf.message import DecodeError

from components.features.store import RETRIEVAL_SERVICE, online_user_features
from models.schema import ACTIONS, PAD_ACTION, PAD_PIN, SEGMENTS, SEQ_LEN

HIDE = ACTIONS.index("hide")
NEW = SEGMENTS.index("new")  # the segment of a user without a profile


def open_store(features_dir: Path) -> FeatureStore:
    """The Feast store of the repository at `features_dir`, its registry read once now: a registry that cannot be
    read (corrupt, truncated, or without the `retrieval` service) fails the server's start with a message naming
    the repository, instead of a server that reports ready and answers every request degraded."""
    store = FeatureStore(repo_path=str(features_dir))
    try:
        store.get_feature_service(RETRIEVAL_SERVICE)
    except (DecodeError, FeastError) as exc:
        raise ValueError(f"{features_dir}: the Feast registry cannot be read ({type(exc).__name__}: {exc}); "
                         "rebuild the feature repository (the `features` step)") from exc  # fmt: skip
    return store


@dataclass
class OnlineUsers:
    """Model inputs for B users, in the order asked for. Sequences are newest first."""

    user_id: np.ndarray  # [B] int64
    segment: np.ndarray  # [B] int64 index into contracts.SEGMENTS
    declared: np.ndarray  # [B, K] float32 multi-hot of declared interests
    seq_pin_ids: np.ndarray  # [B, L] int64, PAD_PIN where empty
    seq_actions: np.ndarray  # [B, L] int64 codes into contracts.ACTIONS, PAD_ACTION where empty
    seq_ts: np.ndarray  # [B, L] int64 epoch ms, 0 where empty
    hidden: list[frozenset[int]]  # per user: the pins hidden in the online sequence (all of it, not only L)
    known: np.ndarray  # [B] bool: the store has a profile for the user


def online_users(store: FeatureStore, user_ids: list[int], n_interests: int, seq_len: int = SEQ_LEN) -> OnlineUsers:
    """The inputs of `user_ids` from the online store, one row per id; Feast's errors (an unreachable store) propagate.

    A user without a profile (`known` False: signed up after the last materialization, or an id nobody has) gets
    the `new` segment and no declared interests; their realtime sequence is still read, since the stream processor
    pushes the actions of a user who just signed up before any batch job has seen them. A user with a profile but
    no pushed sequence has an empty sequence (a new user who has not acted).
    """
    rows = online_user_features(store, user_ids)
    known = rows["segment"].notna().to_numpy()
    seq_pins = [_list(v) for v in rows["seq_pin_ids"]]
    seq_actions = [_list(v) for v in rows["seq_actions"]]
    return OnlineUsers(
        user_id=rows["user_id"].to_numpy(dtype=np.int64),
        segment=np.array(
            [_segment_code(s) if k else NEW for s, k in zip(rows["segment"], known, strict=True)], dtype=np.int64
        ),  # fmt: skip
        declared=_multi_hot(rows["declared_interests"], n_interests),
        seq_pin_ids=_padded(seq_pins, seq_len, PAD_PIN),
        seq_actions=_padded(seq_actions, seq_len, PAD_ACTION),
        seq_ts=_padded([_list(v) for v in rows["seq_ts"]], seq_len, 0),
        hidden=[
            frozenset(p for p, a in zip(pins, acts, strict=True) if a == HIDE)
            for pins, acts in zip(seq_pins, seq_actions, strict=True)
        ],
        known=known,
    )


def without_features(user_ids: list[int], n_interests: int, seq_len: int = SEQ_LEN) -> OnlineUsers:
    """The inputs when the online store cannot be read: what `online_users` gives a user it knows nothing about."""
    b = len(user_ids)
    return OnlineUsers(
        user_id=np.asarray(user_ids, dtype=np.int64),
        segment=np.full(b, NEW, dtype=np.int64),
        declared=np.zeros((b, n_interests), dtype=np.float32),
        seq_pin_ids=np.full((b, seq_len), PAD_PIN, dtype=np.int64),
        seq_actions=np.full((b, seq_len), PAD_ACTION, dtype=np.int64),
        seq_ts=np.zeros((b, seq_len), dtype=np.int64),
        hidden=[frozenset()] * b,
        known=np.zeros(b, dtype=bool),
    )


def declared_interests(users: OnlineUsers, row: int) -> tuple[int, ...]:
    """The interests user `row` declared (empty for a user without a profile)."""
    return tuple(int(i) for i in np.flatnonzero(users.declared[row]))


def _list(value) -> list[int]:
    """A Feast list cell as Python ints; a null cell (no sequence pushed) is empty."""
    if value is None or (not isinstance(value, list | tuple | np.ndarray) and pd.isna(value)):
        return []
    return [int(x) for x in value]


def _segment_code(segment: str) -> int:
    if segment not in SEGMENTS:
        raise ValueError(f"the online store holds segment {segment!r}, not one of {', '.join(SEGMENTS)}")
    return SEGMENTS.index(segment)


def _multi_hot(declared: pd.Series, n_interests: int) -> np.ndarray:
    out = np.zeros((len(declared), n_interests), dtype=np.float32)
    for i, interests in enumerate(declared):  # a user without a profile has a null cell: no interests
        ids = _list(interests)
        if any(not 0 <= x < n_interests for x in ids):
            raise ValueError(f"the online store declares interests {ids}, outside the model's [0, {n_interests})")
        out[i, ids] = 1.0
    return out


def _padded(rows: list[list[int]], length: int, pad: int) -> np.ndarray:
    """The first `length` items of each row (rows are newest first), right-padded with `pad`."""
    out = np.full((len(rows), length), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        kept = row[:length]
        out[i, : len(kept)] = kept
    return out
