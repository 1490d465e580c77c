"""MovieLens-100K (`u.data`, `u.item`, `u.genre`) into the canonical contracts.

Mapping: a movie is a pin and its first listed genre is its interest; its genre flags (unit-normalised) are its
content embedding. A rating is an impression followed by an action: rating >= 4 -> repin, 3 -> click,
<= 2 -> hide. Ratings with a timestamp in the same 30-minute session of a user share a request id, so ranking
metrics that group by request (HIT@3) have slates to rank. Movies have no image signatures: each gets its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from components.data.adapters.common import derive_users, line_reject, no_usable_line, read_int_columns, sessionize
from components.data.contracts import ACTIONS, DeadLetter, Reject
from components.data.dataset import WriteReport, validate_and_write
from components.data.sources import SourceError

SURFACE = "movielens"
N_GENRES = 19


def rating_to_action(rating: np.ndarray) -> np.ndarray:
    """>= 4 repin, 3 click, <= 2 hide (index into contracts.ACTIONS)."""
    return np.where(
        rating >= 4, ACTIONS.index("repin"), np.where(rating == 3, ACTIONS.index("click"), ACTIONS.index("hide"))
    )


def ingest_movielens(src: Path, out: Path) -> WriteReport:
    src, out = Path(src), Path(out)
    for name in ("u.data", "u.item", "u.genre"):
        if not (src / name).exists():
            raise FileNotFoundError(f"{src} is not a MovieLens-100K folder: {name} is missing")
    dead = DeadLetter(out / "dead_letter")
    for stale in dead.directory.glob("*.jsonl"):
        stale.unlink()
    ratings = read_int_columns(src / "u.data", ["user_id", "item_id", "rating", "ts_s"], None, dead, "u.data")
    bad_rating = ~ratings["rating"].between(1, 5)
    dead.write("u.data", [
        Reject(int(r.line), [{"field": "rating", "reason": "rating must be 1-5"}], {"line": f"{r.user_id}\t{r.item_id}\t{r.rating}\t{r.ts_s}"})
        for r in ratings[bad_rating].itertuples()
    ])  # fmt: skip
    ratings = ratings[~bad_rating]
    if ratings.empty:
        raise no_usable_line(src / "u.data", "ratings of 1-5", dead.counts.get("u.data", 0), dead, "u.data")

    events = _events(ratings)
    pins, interests = _pins(src, events, dead)
    tables = {"interests": interests, "pins": pins, "users": derive_users(events), "events": events}
    manifest = {"source": "movielens-100k", "path": str(src), "raw_rejected": dict(dead.counts)}
    return validate_and_write(out, tables, manifest)


def _events(ratings: pd.DataFrame) -> pd.DataFrame:
    r = ratings.sort_values(["user_id", "ts_s", "line"], kind="stable")
    user = r["user_id"].to_numpy()
    ts = r["ts_s"].to_numpy() * 1000
    request = sessionize(user, ts)
    action = rating_to_action(r["rating"].to_numpy())
    n = len(r)
    ev = pd.DataFrame(
        {
            "user_id": np.concatenate([user, user]),
            "pin_id": np.concatenate([r["item_id"].to_numpy()] * 2),
            "action": pd.Categorical.from_codes(np.concatenate([np.zeros(n, dtype=np.int8), action]), ACTIONS),
            "ts": np.concatenate([ts, ts]),
            "request_id": np.concatenate([request, request]),
            "surface": SURFACE,
        }
    )
    # impressions sort before the action they precede (same timestamp, lower action code)
    return ev.sort_values(["ts", "request_id", "action"], kind="stable").reset_index(drop=True)


def _pins(src: Path, events: pd.DataFrame, dead: DeadLetter) -> tuple[pd.DataFrame, pa.Table]:
    genres = [
        line.split("|")[0] for line in (src / "u.genre").read_text(encoding="latin-1").splitlines() if line.strip()
    ]
    if not genres:
        raise SourceError(src / "u.genre", "no genre lines: every movie needs its genres as interests")
    interests = pa.table(
        {"interest_id": pa.array(range(len(genres)), pa.int64()), "name": pa.array(genres, pa.string())}
    )
    first_seen = events.groupby("pin_id")["ts"].min()
    rows, rejects = [], []
    # a movie line that cannot be read is rejected here; its pin is then unknown and its events are rejected too
    for line_no, line in enumerate((src / "u.item").read_text(encoding="latin-1").splitlines(), start=1):
        parts = line.split("|")
        if not line.strip():
            continue
        if len(parts) < 5 + N_GENRES:
            rejects.append(line_reject(line_no, "line", f"expected {5 + N_GENRES} fields, got {len(parts)}", line))
            continue
        try:
            pin_id = int(parts[0])
            flags = np.array([int(f) for f in parts[5 : 5 + N_GENRES]], dtype=np.float32)
        except (ValueError, OverflowError):  # OverflowError: a flag too large for a float
            rejects.append(line_reject(line_no, "line", "the movie id and the genre flags must be integers", line))
            continue
        created = _release_ms(parts[2])
        if created is None:  # no release date: the movie existed at least from its first rating
            created = int(first_seen.get(pin_id, 0)) or None
        norm = np.linalg.norm(flags)
        rows.append(
            {
                "pin_id": pin_id,
                "interest_id": int(np.argmax(flags)) if flags.any() else 0,
                "created_ts": created,
                "image_signature_fine": pin_id,
                "image_signature_coarse": pin_id,
                "quality": None,
                "embedding": (flags / norm).tolist() if norm else None,
            }
        )
    dead.write("u.item", rejects)
    if not rows:
        raise no_usable_line(src / "u.item", f"movie lines of {5 + N_GENRES} '|' fields", len(rejects), dead, "u.item")
    return pd.DataFrame(rows), interests


def _release_ms(text: str) -> int | None:
    try:
        return int(datetime.strptime(text.strip(), "%d-%b-%Y").replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        return None
