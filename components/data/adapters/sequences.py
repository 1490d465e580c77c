"""The one-pair-per-line `user item` sequence files of SASRec / BERT4Rec into the canonical contracts.

These files keep only the order of each user's items (no timestamps, no negatives, no impressions). Each line
becomes a repin with a synthetic timestamp: BASE_TS plus one second per line, which preserves the order within a
user and across the file and nothing more. Every action is its own request. Items carry no interest (all
belong to interest 0, "unknown"), no quality and no image: each gets its own signature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from components.data.adapters.common import derive_users, read_int_columns
from components.data.contracts import ACTIONS, DeadLetter
from components.data.dataset import WriteReport, validate_and_write

BASE_TS = 1_577_836_800_000  # 2020-01-01 UTC: an arbitrary origin, since the files hold order only
SURFACE = "external"


def ingest_sequences(src: Path, out: Path) -> WriteReport:
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise FileNotFoundError(f"{src} is not a file of 'user item' lines")
    dead = DeadLetter(out / "dead_letter")
    for stale in dead.directory.glob("*.jsonl"):
        stale.unlink()
    pairs = read_int_columns(src, ["user_id", "item_id"], None, dead, src.name)
    ts = BASE_TS + (pairs["line"].to_numpy(dtype=np.int64) - 1) * 1000
    events = pd.DataFrame(
        {
            "user_id": pairs["user_id"].to_numpy(),
            "pin_id": pairs["item_id"].to_numpy(),
            "action": pd.Categorical.from_codes(np.full(len(pairs), ACTIONS.index("repin"), dtype=np.int8), ACTIONS),
            "ts": ts,
            "request_id": pairs["line"].to_numpy(dtype=np.int64),
            "surface": SURFACE,
        }
    )
    first_seen = events.groupby("pin_id")["ts"].min()
    pins = pd.DataFrame(
        {
            "pin_id": first_seen.index.to_numpy(),
            "interest_id": 0,
            "created_ts": first_seen.to_numpy(),
            "image_signature_fine": first_seen.index.to_numpy(),
            "image_signature_coarse": first_seen.index.to_numpy(),
            "quality": np.nan,
        }
    )
    interests = pa.table({"interest_id": pa.array([0], pa.int64()), "name": ["unknown"]})
    tables = {"interests": interests, "pins": pins, "users": derive_users(events, timed=False), "events": events}
    manifest = {"source": "sequence-file", "path": str(src), "raw_rejected": dict(dead.counts)}
    return validate_and_write(out, tables, manifest)
