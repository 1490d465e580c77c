"""What the adapters share: reading delimited text with a reject per bad line, and deriving user profiles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from components.data.contracts import INT64_MAX, DeadLetter, Reject
from components.data.sources import SourceError
from components.data.world.config import DAY_MS

NEW_USER_DAYS = 14  # first seen in the last two weeks of the data
RESURRECTION_GAP_DAYS = 28  # a gap this long between active days, then activity again
INT64_MIN = -(2**63)


def read_int_columns(path: Path, names: Sequence[str], sep: str | None, dead: DeadLetter, source: str) -> pd.DataFrame:
    """Read a text file whose first len(names) fields per line are integers.

    A line with too few fields, a non-integer field or an integer beyond int64 is written to the dead letter with its
    1-based line number and the reason; the good lines come back with a `line` column (int64 columns). Raises
    SourceError when no line is good: there is nothing to build a dataset from.
    """
    rows, rejects = [], []
    with open(path, encoding="latin-1") as fh:  # every byte decodes: a line of garbage becomes a reject, not an error
        for line_no, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            parts = text.split(sep)
            if len(parts) < len(names):
                rejects.append(line_reject(line_no, "line", f"expected {len(names)} fields, got {len(parts)}", text))
                continue
            try:
                values = [int(p) for p in parts[: len(names)]]
            except ValueError:
                bad = next(n for n, p in zip(names, parts, strict=False) if not _is_int(p))
                rejects.append(line_reject(line_no, bad, f"{bad} is not an integer", text))
                continue
            huge = next((n for n, v in zip(names, values, strict=True) if not INT64_MIN <= v <= INT64_MAX), None)
            if huge is not None:  # one such line must not fail the whole file when the columns become int64
                rejects.append(
                    line_reject(line_no, huge, f"{huge} is too large for 64 bits (at most {INT64_MAX})", text)
                )
                continue
            rows.append((line_no, *values))
    dead.write(source, rejects)
    if not rows:
        raise no_usable_line(
            path, f"a line of {len(names)} integer fields ({', '.join(names)})", len(rejects), dead, source
        )
    return pd.DataFrame(rows, columns=["line", *names]).astype(np.int64)


def no_usable_line(path: Path, expected: str, n_rejected: int, dead: DeadLetter, source: str) -> SourceError:
    """The error for a source without one usable line. An error, not an empty dataset: a dataset without events
    cannot be trained on or evaluated, and saying so here names the file, where a later step could not."""
    if n_rejected:
        where = dead.directory / f"{source}.jsonl"
        return SourceError(path, f"no usable line; expected {expected}: all {n_rejected:,} rejected, see {where}")
    return SourceError(path, f"no data lines; expected {expected}")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def line_reject(line_no: int, field: str, reason: str, text: str) -> Reject:
    """A bad line of a text source, for the dead letter: its 1-based number, what is wrong, and the line itself."""
    return Reject(row=line_no, errors=[{"field": field, "reason": reason}], record={"line": text})


def derive_users(events: pd.DataFrame, timed: bool = True) -> pa.Table:
    """User profiles for data that carries none, by one documented rule over each user's event days:

    new: first seen in the last NEW_USER_DAYS of the data; resurrected: came back after a gap of at least
    RESURRECTION_GAP_DAYS; core: the top quarter of the remaining users by active days; casual: everyone else.
    With `timed=False` (order-only data, whose timestamps are synthetic) only the last rule applies, with events
    counted instead of days. signup_ts is the first event; declared interests are unknown (empty).
    """
    # order-only data: one "day" per event, so the activity rule counts events and no gap can be measured
    day = events["ts"] // DAY_MS if timed else pd.Series(np.arange(len(events)), index=events.index)
    g = pd.DataFrame({"user_id": events["user_id"], "day": day}).drop_duplicates().sort_values(["user_id", "day"])
    first = g.groupby("user_id")["day"].min()
    active_days = g.groupby("user_id")["day"].size()
    max_gap = g.groupby("user_id")["day"].diff().groupby(g["user_id"]).max().fillna(0)
    last_day = int(day.max())
    segment = pd.Series("casual", index=first.index, dtype=object)
    resurrected = (max_gap >= RESURRECTION_GAP_DAYS) & timed
    new = (first > last_day - NEW_USER_DAYS) & timed
    rest = ~resurrected & ~new
    threshold = active_days[rest].quantile(0.75) if rest.any() else np.inf
    segment[rest & (active_days >= threshold) & (active_days > 1)] = "core"
    segment[resurrected] = "resurrected"
    segment[new] = "new"
    signup = events.groupby("user_id")["ts"].min()
    users = first.index.to_numpy()
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "segment": pa.array(segment.loc[users].tolist(), pa.string()),
            "signup_ts": pa.array(signup.loc[users].to_numpy(), pa.int64()),
            "declared_interests": pa.array([[] for _ in users], pa.list_(pa.int64())),
        }
    )


def sessionize(user: np.ndarray, ts: np.ndarray, gap_ms: int = 30 * 60_000) -> np.ndarray:
    """Request ids for logs without them: a user's events belong to one session until a gap longer than gap_ms.
    Inputs must be sorted by (user, ts)."""
    new_session = np.ones(len(user), dtype=bool)
    new_session[1:] = (user[1:] != user[:-1]) | (np.diff(ts) > gap_ms)
    return np.cumsum(new_session) - 1
