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

import numpy as np
import pandas as pd
from feast import FeatureStore
from kserve.errors import InvalidInput

from components.data.contracts import ACTIONS, SEGMENTS
from components.features.sequence import PAD_ACTION, PAD_PIN, SEQ_LEN
from components.features.store import online_user_features

HIDE = ACTIONS.index("hide")


class MissingOnlineFeatures(LookupError):
    """Users the online store has no profile for (never materialized, or unknown ids)."""

    def __init__(self, user_ids: list[int]):
        self.user_ids = user_ids
        super().__init__(f"no online features for user id(s) {user_ids}")


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


def online_users(store: FeatureStore, user_ids: list[int], n_interests: int, seq_len: int = SEQ_LEN) -> OnlineUsers:
    """The inputs of `user_ids` from the online store; raises MissingOnlineFeatures naming users without a profile.

    A user with a profile but no pushed sequence yet has an empty sequence (a new user who has not acted).
    """
    rows = online_user_features(store, user_ids)
    missing = rows["segment"].isna().to_numpy()
    if missing.any():
        raise MissingOnlineFeatures([int(u) for u in rows["user_id"].to_numpy()[missing]])
    seq_pins = [_list(v) for v in rows["seq_pin_ids"]]
    seq_actions = [_list(v) for v in rows["seq_actions"]]
    return OnlineUsers(
        user_id=rows["user_id"].to_numpy(dtype=np.int64),
        segment=np.array([_segment_code(s) for s in rows["segment"]], dtype=np.int64),
        declared=_multi_hot(rows["declared_interests"], n_interests),
        seq_pin_ids=_padded(seq_pins, seq_len, PAD_PIN),
        seq_actions=_padded(seq_actions, seq_len, PAD_ACTION),
        seq_ts=_padded([_list(v) for v in rows["seq_ts"]], seq_len, 0),
        hidden=[
            frozenset(p for p, a in zip(pins, acts, strict=True) if a == HIDE)
            for pins, acts in zip(seq_pins, seq_actions, strict=True)
        ],
    )


def request_users(store: FeatureStore, user_ids: list[int], n_interests: int, seq_len: int = SEQ_LEN) -> OnlineUsers:
    """`online_users` for the users of a request's instances (in instance order): a user without online features is
    the client's mistake, an InvalidInput (HTTP 400) naming the instance."""
    try:
        return online_users(store, user_ids, n_interests, seq_len)
    except MissingOnlineFeatures as exc:
        first = exc.user_ids[0]
        raise InvalidInput(f"instances[{user_ids.index(first)}].user_id: user {first} has no online features") from exc


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
    for i, interests in enumerate(declared):
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
