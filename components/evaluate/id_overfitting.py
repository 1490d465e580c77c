"""`homefeed eval ids`: does pretraining the ID embeddings help, and what do dropout and the pretraining window do
to overfitting (seed 000: pretrained ID embeddings overfit unless the pretraining window is aligned with the
training window and the IDs take dropout 0.5)?

Every variant is the plain two-tower trained on everything before the cut-off. They differ in the ID tables: none
pretrained, or pretrained by the contrastive job (components/train/pretrain_ids.py) on a window that ends at the
cut-off (aligned) or at the end of the data, so that it covers the holdout (misaligned); and in the ID dropout.

One metric on both sides of the cut-off, so the gap means something: the hit rate@K of (user, pin) engagements,
with the user embedded as of the engagement's time (training pairs: a sample of the last training days) or as of
the cut-off (holdout pairs: repins after it), the pin ranked among all pins. A large train-minus-holdout gap is
overfitting; a misaligned window shows up as a holdout hit rate it could not have earned without seeing the future.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from components.data.dataset import Dataset
from components.train.examples import POSITIVE_ACTIONS, Catalog, read_events
from components.train.pretrain_ids import pretrain_ids
from components.train.retrieval import (
    RetrievalTraining,
    load_two_tower,
    pin_embeddings,
    train_retrieval,
    user_embeddings,
)

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Pairs:
    users: np.ndarray
    pins: np.ndarray
    at_ts: np.ndarray


def _sample(frame, n: int, seed: int) -> Pairs:
    if len(frame) > n:
        frame = frame.sample(n, random_state=seed)
    return Pairs(frame.user_id.to_numpy(), frame.pin_id.to_numpy(), frame.ts.to_numpy())


def hit_rate(model, cat: Catalog, log, pairs: Pairs, k: int = 100) -> float:
    """Share of pairs whose pin is among the user's top k pins (exact search over the whole corpus)."""
    pins = pin_embeddings(model, cat)
    users = user_embeddings(model, cat, log, pairs.users, pairs.at_ts)
    scores = users @ pins.T
    own = scores[np.arange(len(pairs.pins)), pairs.pins]
    rank = (scores > own[:, None]).sum(axis=1)  # pins scoring strictly higher than the engaged one
    return float((rank < k).mean())


def evaluate_id_pretraining(dataset: Path, out_dir: Path, cut_ms: int, epochs: int = 3, seed: int = 0,
                            n_pairs: int = 3000, k: int = 100) -> dict:  # fmt: skip
    """Pretrain aligned and misaligned ID tables, train the variants, measure train and holdout hit rates; writes
    id_pretraining.json and id_pretraining.md into `out_dir`."""
    ds, out_dir = Dataset(dataset), Path(out_dir)
    cat = Catalog.load(ds)
    ev, log = read_events(ds)
    _, end_ms = ds.manifest()["time_span_ms"]
    positives = ev[ev.action.isin(POSITIVE_ACTIONS)]
    train_pairs = _sample(positives[(positives.ts < cut_ms) & (positives.ts >= cut_ms - 3 * DAY_MS)], n_pairs, seed)
    future = ev[(ev.action == "repin") & (ev.ts >= cut_ms)]
    holdout = _sample(future.assign(ts=cut_ms), n_pairs, seed)

    aligned = pretrain_ids(dataset, out_dir / "ids_aligned", window_end_ms=cut_ms)
    misaligned = pretrain_ids(dataset, out_dir / "ids_misaligned", window_end_ms=end_ms + 1)
    plain = RetrievalTraining(epochs=epochs, seed=seed)
    ids_aligned = str(out_dir / "ids_aligned" / "id_embeddings.pt")
    ids_misaligned = str(out_dir / "ids_misaligned" / "id_embeddings.pt")
    variants = {
        "no pretraining, dropout 0.5": plain,
        "no pretraining, no dropout": replace(plain, id_dropout=0.0),
        "pretrained aligned, dropout 0.5": replace(plain, pretrained_ids=ids_aligned),
        "pretrained aligned, no dropout": replace(plain, pretrained_ids=ids_aligned, id_dropout=0.0),
        "pretrained misaligned, dropout 0.5": replace(plain, pretrained_ids=ids_misaligned),
    }
    result = {
        "cut_ms": cut_ms,
        "k": k,
        "train_pairs": int(len(train_pairs.pins)),
        "holdout_pairs": int(len(holdout.pins)),
        "pretraining": {
            "aligned": {key: aligned[key] for key in ("pairs", "window_start_ms", "window_end_ms")},
            "misaligned": {key: misaligned[key] for key in ("pairs", "window_start_ms", "window_end_ms")},
        },
        "variants": {},
    }
    for i, (name, opts) in enumerate(variants.items()):
        summary = train_retrieval(dataset, out_dir / "models" / str(i), cut_ms, opts)
        model = load_two_tower(out_dir / "models" / str(i))
        train_hr, holdout_hr = hit_rate(model, cat, log, train_pairs, k), hit_rate(model, cat, log, holdout, k)
        result["variants"][name] = {
            "train_loss": round(float(summary["train_loss"]), 4),
            "train_hit_rate": round(train_hr, 4),
            "holdout_hit_rate": round(holdout_hr, 4),
            "gap": round(train_hr - holdout_hr, 4),
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "id_pretraining.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "id_pretraining.md").write_text(markdown(result))
    return result


def markdown(r: dict) -> str:
    rows = "\n".join(
        f"| {name} | {v['train_loss']:.3f} | {v['train_hit_rate']:.4f} | {v['holdout_hit_rate']:.4f} | {v['gap']:+.4f} |"
        for name, v in r["variants"].items()
    )
    a, m = r["pretraining"]["aligned"], r["pretraining"]["misaligned"]
    return f"""### Pretrained ID embeddings: dropout and window alignment (`homefeed eval ids`)

Plain two-tower, trained on everything before the cut-off. ID tables pretrained by the contrastive job on
{a["pairs"]:,} pairs of a window ending at the cut-off (aligned) or on {m["pairs"]:,} pairs of a window ending at the
data's end, over the holdout (misaligned). Hit rate@{r["k"]}: the engaged pin among the user's top {r["k"]} of all
pins; training side: {r["train_pairs"]:,} clicks/repins of the last 3 training days, user as of the action;
holdout: {r["holdout_pairs"]:,} repins after the cut-off, user as of the cut-off.

| variant | train loss | train hit rate | holdout hit rate | gap (train − holdout) |
|---|---|---|---|---|
{rows}
"""
