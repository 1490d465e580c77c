"""The feature tables at a cut-off: what the feature views in `feature_repo/views.py` hold, computed from a dataset.

Every table describes the world as it was just before `cutoff` (UTC epoch ms): only events with ts < cutoff count,
the same rule as `ActionLog.sequences_at`, and users who had not signed up or pins not yet created are absent, so a
store built at a past cut-off never serves what was unknown then. Each row is stamped with the cut-off in the column
the sources declare as their timestamp field.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from components.data.contracts import ACTIONS
from components.features.sequence import SEQ_LEN, ActionLog

TIMESTAMP = "event_timestamp"  # feature_repo/sources.py: the timestamp field of every source
ENGAGEMENTS = ("click", "repin")  # what the pin's time-decayed engagement score counts
DECAYED_ACTIONS = ("click", "repin", "hide")  # each also kept as a time-decayed count of its own
DAY_MS = 86_400_000


def ms_to_datetime(ms: int) -> datetime:
    """Exact conversion (no float seconds), so the stamp in parquet and the materialization window agree."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))


def _stamp(n: int, cutoff: int) -> pd.Series:
    return pd.Series(pd.to_datetime(np.full(n, cutoff, dtype=np.int64), unit="ms", utc=True), name=TIMESTAMP)


def _action_counts(events: pd.DataFrame, key: str, cutoff: int) -> pd.DataFrame:
    """[key x action] counts of events before the cut-off, every action of contracts.ACTIONS as a column."""
    before = events.loc[events["ts"] < cutoff, [key, "action"]]
    counts = before.groupby([key, "action"]).size().unstack(fill_value=0)
    return counts.reindex(columns=list(ACTIONS), fill_value=0).astype(np.int64)


def user_profile_table(users: pd.DataFrame, events: pd.DataFrame, cutoff: int) -> pd.DataFrame:
    """One row per user signed up before the cut-off: the `user_profile` view's columns plus user_id and stamp."""
    users = users.loc[users["signup_ts"] < cutoff].reset_index(drop=True)
    counts = _action_counts(events, "user_id", cutoff).reindex(users["user_id"], fill_value=0)
    n_impressions = counts["impression"].to_numpy()
    n_repins = counts["repin"].to_numpy()
    repin_rate = np.where(n_impressions > 0, n_repins / np.maximum(n_impressions, 1), 0.0)
    declared = users["declared_interests"].map(lambda v: [] if v is None else [int(x) for x in v])
    return pd.DataFrame(
        {
            "user_id": users["user_id"].astype(np.int64),
            "segment": users["segment"].astype(str),
            "declared_interests": declared,
            "n_impressions": n_impressions,
            "n_clicks": counts["click"].to_numpy(),
            "n_repins": n_repins,
            "n_hides": counts["hide"].to_numpy(),
            "repin_rate": repin_rate.astype(np.float32),
            TIMESTAMP: _stamp(len(users), cutoff),
        }
    )


def decayed_counts(events: pd.DataFrame, cutoff: int, half_life_ms: float) -> pd.DataFrame:
    """Per pin and action (click, repin, hide): the sum over that pin's actions before the cut-off of
    0.5 ** (age / half_life), age = cutoff - ts. A pin index, one column per action, zero where none.

    A repin a half-life ago counts half as much as one just now, so the counts favour pins that are engaging lately.
    """
    if half_life_ms <= 0:
        raise ValueError(f"half_life_ms must be > 0, got {half_life_ms}")
    ev = events.loc[(events["ts"] < cutoff) & events["action"].isin(DECAYED_ACTIONS), ["pin_id", "action", "ts"]]
    weight = np.exp2(-(cutoff - ev["ts"].to_numpy(dtype=np.float64)) / half_life_ms)
    frame = pd.DataFrame({"pin_id": ev["pin_id"].to_numpy(), "action": ev["action"].to_numpy(), "w": weight})
    table = frame.pivot_table(index="pin_id", columns="action", values="w", aggfunc="sum", fill_value=0.0)
    return table.reindex(columns=list(DECAYED_ACTIONS), fill_value=0.0)


def pin_features_table(
    pins: pd.DataFrame, events: pd.DataFrame, cutoff: int, half_life_ms: float = 7 * DAY_MS
) -> pd.DataFrame:
    """One row per pin created before the cut-off: the `pin_features` view's columns plus pin_id and stamp."""
    pins = pins.loc[pins["created_ts"] < cutoff].reset_index(drop=True)
    ids = pins["pin_id"]
    counts = _action_counts(events, "pin_id", cutoff).reindex(ids, fill_value=0)
    decayed = decayed_counts(events, cutoff, half_life_ms).reindex(ids, fill_value=0.0)
    score = decayed[list(ENGAGEMENTS)].sum(axis=1)
    return pd.DataFrame(
        {
            "pin_id": ids.astype(np.int64),
            "interest_id": pins["interest_id"].astype(np.int64),
            "image_signature_coarse": pins["image_signature_coarse"].astype(np.int64),
            "created_ts": pins["created_ts"].astype(np.int64),
            "quality": pins["quality"].astype(np.float32),  # NaN (unknown) is written as null
            "embedding": pins["embedding"],
            "n_impressions": counts["impression"].to_numpy(),
            "n_repins": counts["repin"].to_numpy(),
            "engagement_score": score.to_numpy(dtype=np.float32),
            **{f"decayed_{a}s": decayed[a].to_numpy(dtype=np.float32) for a in DECAYED_ACTIONS},
            TIMESTAMP: _stamp(len(pins), cutoff),
        }
    )


def _ragged(values: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    """Rows of a padded [N, L] array cut to their lengths, as one Arrow list column (order within rows kept)."""
    valid = np.arange(values.shape[1])[None, :] < lengths[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[valid].astype(np.int64)))


def sequence_table(log: ActionLog, user_ids: np.ndarray, cutoff: int, max_len: int = SEQ_LEN) -> pa.Table:
    """Each user's last `max_len` actions before the cut-off, newest first, as the `user_action_sequence` columns.

    Actions are the int8 codes of `ActionLog` widened to int64 (Feast has no 8-bit type). A user without actions
    gets empty lists and seq_len 0.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    seq = log.sequences_at(user_ids, np.full(len(user_ids), cutoff, dtype=np.int64), max_len=max_len)
    return pa.table(
        {
            "user_id": pa.array(user_ids),
            "seq_pin_ids": _ragged(seq.pin_ids, seq.lengths),
            "seq_actions": _ragged(seq.actions, seq.lengths),
            "seq_ts": _ragged(seq.ts, seq.lengths),
            "seq_len": pa.array(seq.lengths.astype(np.int64)),
            TIMESTAMP: pa.array(_stamp(len(user_ids), cutoff)),
        }
    )
