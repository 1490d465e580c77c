"""The serving corpus (seed 000): which pins retrieval may return, as an immutable, versioned table.

Three rules, each from the seed:

- **Eligibility by a time-decayed engagement score.** A pin's score is the sum of its engagements before the
  corpus' time, each weighted by its action (`ACTION_WEIGHTS`: a hide counts against) and halved every
  `half_life_days`. What users engaged with last week matters more than what they engaged with last quarter, so an
  old hit does not hold its place forever. Pins with a score above `min_score` are eligible, and so are pins newer
  than `new_pin_days`: they had no time to earn engagement, and a corpus that waits for it never shows them.
- **Image-signature dedup at the training granularity.** Many pins are the same image. The corpus keeps one pin
  (the best scored) per signature, at the granularity training uses: `TRAINING_GRANULARITY`, the fine signature.
  In our data exact re-pins share a fine signature and a content embedding, so the towers cannot tell them apart
  and training treats them as one item; near-duplicates share only the coarse signature, have their own
  embeddings, and are distinct items to training. Deduplicating the corpus at the coarse level would drop items
  the model learned as distinct; at a finer level than training it would serve the same image twice. That is the
  training-serving skew the seed describes; `granularity_skew` measures both sides.
- **Versioned.** Each build writes `v<N>/` (`corpus.parquet` + `manifest.json`) under a root and never rewrites
  one: the index is built from a version, and a served corpus can be traced back to its inputs.

Example:
    build_corpus("data/world", "data/corpus")   # -> {"version": 1, "path": ".../v1", "counts": {...}, ...}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DAY_MS = 86_400_000
GRANULARITIES = {"fine": "image_signature_fine", "coarse": "image_signature_coarse"}
TRAINING_GRANULARITY = "fine"  # see the module docstring: what the towers treat as one item
ACTION_WEIGHTS = {"click": 0.5, "repin": 1.0, "hide": -1.0}
CORPUS_FILE, MANIFEST_FILE = "corpus.parquet", "manifest.json"
_VERSION = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class CorpusOptions:
    half_life_days: float = 7.0
    min_score: float = 0.0  # eligible above this decayed score (hides count against)
    new_pin_days: float = 3.0  # pins younger than this are eligible without engagement
    granularity: str = TRAINING_GRANULARITY
    max_pins: int | None = None  # the best scored after dedup; None: every eligible pin

    def __post_init__(self) -> None:
        if self.half_life_days <= 0:
            raise ValueError(f"half_life_days must be > 0; got {self.half_life_days}")
        if self.new_pin_days < 0:
            raise ValueError(f"new_pin_days must be >= 0; got {self.new_pin_days}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {sorted(GRANULARITIES)}; got {self.granularity!r}")
        if self.max_pins is not None and self.max_pins < 1:
            raise ValueError(f"max_pins must be >= 1 or None; got {self.max_pins}")


def decayed_scores(events: pd.DataFrame, n_pins: int, as_of_ms: int, half_life_days: float) -> np.ndarray:
    """[n_pins] sum over each pin's engagements before `as_of_ms` of ACTION_WEIGHTS[action] * 2^(-age / half-life).

    `events` has pin_id, action, ts; impressions and unknown actions weigh nothing."""
    ev = events[(events.ts < as_of_ms) & events.action.isin(list(ACTION_WEIGHTS))]
    age_days = (as_of_ms - ev.ts.to_numpy()) / DAY_MS
    weight = ev.action.map(ACTION_WEIGHTS).to_numpy(dtype=np.float64) * np.exp2(-age_days / half_life_days)
    return np.bincount(ev.pin_id.to_numpy(), weights=weight, minlength=n_pins)


def dedup(signatures: np.ndarray, scores: np.ndarray, created_ts: np.ndarray, pin_ids: np.ndarray) -> np.ndarray:
    """[N] bool: True for the one pin kept per signature, the highest score (then the newest, then the lowest id)."""
    order = np.lexsort((pin_ids, -created_ts, -scores, signatures))  # by signature, best first within it
    first = np.ones(len(order), dtype=bool)
    first[1:] = signatures[order][1:] != signatures[order][:-1]
    keep = np.zeros(len(order), dtype=bool)
    keep[order[first]] = True
    return keep


def select(pins: pd.DataFrame, scores: np.ndarray, as_of_ms: int, opts: CorpusOptions) -> tuple[pd.DataFrame, dict]:
    """The corpus rows from `pins` (pin_id, interest_id, created_ts and both signature columns) and the counts
    of each stage: pins that exist at `as_of_ms`, eligible, after dedup, served."""
    exists = pins[pins.created_ts < as_of_ms]
    score = scores[exists.pin_id.to_numpy()]
    new = exists.created_ts.to_numpy() >= as_of_ms - opts.new_pin_days * DAY_MS
    eligible = exists[(score > opts.min_score) | new].assign(score=score[(score > opts.min_score) | new])
    sig = eligible[GRANULARITIES[opts.granularity]].to_numpy()
    kept = eligible[dedup(sig, eligible.score.to_numpy(), eligible.created_ts.to_numpy(), eligible.pin_id.to_numpy())]
    served = kept.sort_values(["score", "pin_id"], ascending=[False, True])
    if opts.max_pins is not None:
        served = served.head(opts.max_pins)
    counts = {"existing": len(exists), "eligible": len(eligible), "after_dedup": len(kept), "served": len(served)}
    columns = ["pin_id", "interest_id", "created_ts", "score", *GRANULARITIES.values()]
    return served[columns].reset_index(drop=True), counts


def build_corpus(dataset_dir: Path, root: Path, as_of_ms: int | None = None, opts: CorpusOptions | None = None) -> dict:
    """Select the corpus from a dataset as of `as_of_ms` (default: the feature store's cut-off, just after the last
    event) and write it as the next version under `root`; returns the manifest (with `path`)."""
    from components.data.dataset import Dataset
    from components.data.window import window_start
    from components.features.store import default_cutoff

    opts = opts or CorpusOptions()
    ds = Dataset(dataset_dir)
    pins = ds.read("pins", columns=["pin_id", "interest_id", "created_ts", *GRANULARITIES.values()])
    events = ds.read("events", columns=["pin_id", "action", "ts"])
    as_of_ms = default_cutoff(events) if as_of_ms is None else int(as_of_ms)
    events = events[events["ts"] >= window_start(ds)]  # a window's context is for sequences, not engagement
    scores = decayed_scores(events, int(pins.pin_id.max()) + 1, as_of_ms, opts.half_life_days)
    table, counts = select(pins, scores, as_of_ms, opts)
    if table.empty:
        raise ValueError(f"no pin is eligible as of {as_of_ms}: the corpus would be empty ({counts})")
    manifest = {"dataset": str(dataset_dir), "as_of_ms": as_of_ms, "options": asdict(opts), "counts": counts}
    return write_version(root, table, manifest)


def write_version(root: Path, table: pd.DataFrame, manifest: dict) -> dict:
    """Write `table` and `manifest` as root/v<N+1>, N the highest version there; the folder appears whole (written
    aside, then renamed), so a reader never sees half a version and no version is ever rewritten."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = max(versions(root), default=0) + 1
    final, partial = root / f"v{version}", root / f".v{version}.partial"
    partial.mkdir()
    table.to_parquet(partial / CORPUS_FILE, index=False)
    manifest = {**manifest, "version": version}
    (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    os.rename(partial, final)  # fails if another writer took the number: nothing is overwritten
    return {**manifest, "path": str(final)}


def versions(root: Path) -> list[int]:
    """The version numbers under `root`, ascending."""
    root = Path(root)
    found = (_VERSION.match(p.name) for p in root.iterdir()) if root.is_dir() else ()
    return sorted(int(m.group(1)) for m in found if m)


def read_corpus(root: Path, version: int | None = None) -> tuple[pd.DataFrame, dict]:
    """A version's table and manifest (default: the latest)."""
    have = versions(root)
    if not have:
        raise FileNotFoundError(f"{root} holds no corpus version (build one with build_corpus)")
    version = have[-1] if version is None else version
    if version not in have:
        raise FileNotFoundError(f"corpus version {version} is not under {root}; versions there: {have}")
    path = Path(root) / f"v{version}"
    return pd.read_parquet(path / CORPUS_FILE), json.loads((path / MANIFEST_FILE).read_text())


def granularity_skew(pins: pd.DataFrame, engaged_pins: np.ndarray, corpus_pins: np.ndarray, train: str) -> dict:
    """How well a corpus matches training at granularity `train` ("fine" or "coarse"):

    - coverage: the share of the engaged items (pins grouped by the training signature) that the corpus still
      holds a pin of. Dedup coarser than training drops items training learned as distinct: coverage < 1.
    - duplicate_share: the share of corpus pins whose training item the corpus already holds (the same image served
      twice). Dedup finer than training leaves duplicates: > 0.
    """
    sig = pins.set_index("pin_id")[GRANULARITIES[train]]
    engaged_items = set(sig.reindex(np.unique(engaged_pins)).dropna().astype(np.int64))
    corpus_items = sig.reindex(corpus_pins).dropna().astype(np.int64)
    coverage = len(engaged_items & set(corpus_items)) / len(engaged_items) if engaged_items else float("nan")
    duplicate_share = float(corpus_items.duplicated().mean()) if len(corpus_items) else float("nan")
    return {"coverage": float(coverage), "duplicate_share": duplicate_share}
