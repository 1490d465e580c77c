"""A short, factual description of a dataset: sizes, engagement rates, activity by segment, interest mix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from components.data.contracts import SEGMENTS
from components.data.dataset import Dataset
from components.data.world.config import DAY_MS

ENGAGEMENTS = ("click", "repin", "hide")


def summarize(ds: Dataset) -> dict:
    manifest = ds.manifest()
    events = ds.read("events", columns=["user_id", "pin_id", "action", "ts", "request_id"])
    users = ds.read("users", columns=["user_id", "segment"])
    pins = ds.read_arrow("pins", columns=["pin_id", "interest_id", "image_signature_fine", "image_signature_coarse"])
    interests = ds.read("interests")

    impressions = int((events["action"] == "impression").sum())
    counts = events["action"].value_counts()
    span_days = max((int(events["ts"].max()) - int(events["ts"].min())) / DAY_MS, 1e-9) if len(events) else 0.0
    return {
        "source": manifest.get("source"),
        "rows": manifest["rows"],
        "rejected": manifest["rejected"],
        "span_days": round(span_days, 2),
        "requests": int(events["request_id"].nunique()),
        "actions": {a: int(counts.get(a, 0)) for a in ("impression", *ENGAGEMENTS)},
        "rate_per_impression": {a: _rate(counts.get(a, 0), impressions) for a in ENGAGEMENTS},
        "segments": _segments(events, users, span_days),
        "interests": _interests(events, pins.to_pandas()[["pin_id", "interest_id"]], interests),
        "signatures": {
            "pins": pins.num_rows,
            "fine": len(pc.unique(pins.column("image_signature_fine"))),
            "coarse": len(pc.unique(pins.column("image_signature_coarse"))),
        },
    }


def _rate(n: int, d: int) -> float | None:
    return round(float(n) / d, 5) if d else None


def _segments(events: pd.DataFrame, users: pd.DataFrame, span_days: float) -> list[dict]:
    seg = events[["user_id", "action"]].merge(users, on="user_id", how="left")
    out = []
    for s in SEGMENTS:
        part = seg[seg["segment"] == s]
        n_users = int((users["segment"] == s).sum())
        imp = int((part["action"] == "impression").sum())
        out.append(
            {
                "segment": s,
                "users": n_users,
                "events_per_user_day": round(len(part) / n_users / span_days, 3) if n_users and span_days else None,
                **{f"{a}_rate": _rate(int((part["action"] == a).sum()), imp) for a in ENGAGEMENTS},
            }
        )
    return out


def _interests(events: pd.DataFrame, pins: pd.DataFrame, interests: pd.DataFrame, top: int = 8) -> list[dict]:
    ev = events[events["action"].isin(["impression", "repin"])][["pin_id", "action"]].merge(pins, on="pin_id")
    table = pd.crosstab(ev["interest_id"], ev["action"])
    for col in ("impression", "repin"):
        if col not in table:
            table[col] = 0
    share = table / np.maximum(table.sum(axis=0), 1)
    names = interests.set_index("interest_id")["name"]
    share = share.sort_values("repin", ascending=False).head(top)
    return [
        {
            "interest_id": int(k),
            "name": str(names.get(k, k)),
            "impression_share": round(float(r["impression"]), 4),
            "repin_share": round(float(r["repin"]), 4),
        }
        for k, r in share.iterrows()
    ]
