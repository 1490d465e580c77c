"""Engagement per impression: the unit every engagement rate and drift test is computed on.

An impression is engaged with action `a` when the same request showed the same pin and the user then took `a` on
it; the (request_id, pin_id) pair is the join key because that is what the serving log writes with each action.
The rate of `a` over a window is the mean of its 0/1 column over the impressions shown in that window, so engagement
is attributed to when the pin was shown, not when the user acted.
"""

from __future__ import annotations

import pandas as pd

from components.data.contracts import ACTIONS

ENGAGEMENTS = ("repin", "click", "hide")
_KEY = ["request_id", "pin_id"]
_NEEDED = ("user_id", "pin_id", "action", "ts", "request_id")


def engagement_frame(events: pd.DataFrame, users: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per impression: request_id, pin_id, user_id, ts, and 0/1 columns repin, click, hide.

    With `users`, a `segment` column too ("unknown" for a user missing from `users`, so no impression is lost).
    Rows keep the events' order. Actions whose impression is absent are not rows here: count them with
    `actions_without_impression`.
    """
    _check_events(events)
    impressions = events.loc[events["action"] == "impression", ["request_id", "pin_id", "user_id", "ts"]]
    frame = impressions.reset_index(drop=True)
    for action in ENGAGEMENTS:
        # drop_duplicates: a double-logged action must not duplicate (or double count) its impression
        taken = events.loc[events["action"] == action, _KEY].drop_duplicates()
        frame[action] = _has_key(frame, taken).astype("int8")
    if users is not None:
        _check_columns(users, ("user_id", "segment"), "users")
        segment = frame["user_id"].map(users.drop_duplicates("user_id").set_index("user_id")["segment"])
        frame["segment"] = segment.fillna("unknown").astype(str)
    return frame


def actions_without_impression(events: pd.DataFrame) -> dict[str, int]:
    """Per engagement action, how many (request_id, pin_id) pairs have that action but no impression."""
    _check_events(events)
    shown = events.loc[events["action"] == "impression", _KEY].drop_duplicates()
    counts = {}
    for action in ENGAGEMENTS:
        taken = events.loc[events["action"] == action, _KEY].drop_duplicates()
        counts[action] = int((~_has_key(taken, shown)).sum())
    return counts


def _has_key(rows: pd.DataFrame, keys: pd.DataFrame) -> pd.Series:
    """Whether each row's (request_id, pin_id) appears in `keys` (aligned to `rows`' index)."""
    index = pd.MultiIndex.from_frame(keys[_KEY])
    return pd.Series(pd.MultiIndex.from_frame(rows[_KEY]).isin(index), index=rows.index)


def _check_events(events: pd.DataFrame) -> None:
    _check_columns(events, _NEEDED, "events")
    unknown = set(events["action"].unique()) - set(ACTIONS)
    if unknown:
        raise ValueError(f"events has unknown action(s) {sorted(unknown)}; expected one of {list(ACTIONS)}")


def _check_columns(frame: pd.DataFrame, needed, name: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it has {list(frame.columns)}")
