"""`homefeed eval freshness`: how a ranking model decays as it ages, and what retraining on fresh data recovers.

Seed 003 saw engagement with the realtime-sequence model decay unless it was retrained, more so than the model
without the sequence, and settled on retraining twice a week. This measures the same thing offline on one dataset
(run it on a world with and without the drift knob, `world:<size>+intent` and `world:<size>+intent+drift`):

- A model is what the pipeline ships: the retrieval user tower trained on everything before its ranking window,
  user embeddings as of the window's start, and Pinnability trained on the window's impressions (`train_days`). It
  serves unchanged, its user embeddings included, until it is replaced.
- The first model's window ends at `first_cut_day`. The *stale* arm keeps it to the end of the data; the
  *retrained* arm replaces it every `retrain_days` with one trained the same way on the latest window.
- Every day from the first cut on, both arms are measured on that day's impressions: HIT@3 repin (GUIDE §7) and
  hides in the served top 3, beside random order (its exact expectation) and, on a simulated world, the ground
  truth's own order. Days differ in how hard they are, so the comparable figure is the *lift share*:
  (model - random) / (ground truth - random), the share of the achievable gain over random that the model gets.

Decay is the stale arm's lift share falling with its age; recovery is the retrained arm's lift share against the
stale arm's on the same days. docs/monitoring.md cites the JSON this writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from components.metrics import hit_at_k
from components.train.ranking import RankingTraining, score, served_score, train_in_process
from models.ranking.pinnability import HEADS, PinnabilityConfig
from models.ranking.sequence import SequenceConfig

DAY_MS = 86_400_000
REPIN, HIDE = HEADS.index("repin"), HEADS.index("hide")


@dataclass
class FreshnessOptions:
    first_cut_day: float = 14.0  # the first model's window ends here (days after the data's first event)
    train_days: float = 7.0  # each model's ranking window
    retrain_days: float = 3.5  # twice a week, as the seed retrains
    variants: tuple[str, ...] = ("none", "transact_v11")  # sequence kinds (models/ranking/sequence.py)
    max_train: int = 40_000  # impressions sampled per training window
    epochs: int = 2
    batch_size: int = 256
    seed: int = 0


def random_hit_at_k(request_id: np.ndarray, label: np.ndarray, k: int = 3) -> float:
    """The exact expected HIT@k of a uniformly random order: a positive in a request of n lands in the top k with
    probability min(k, n) / n. Exact rather than one random draw, so the lift share carries no extra noise."""
    _, inverse, counts = np.unique(request_id, return_inverse=True, return_counts=True)
    n = counts[inverse][np.asarray(label).astype(bool)]
    return float(np.mean(np.minimum(k, n) / n)) if len(n) else float("nan")


def lift_share(model: float, random: float, best: float) -> float:
    """(model - random) / (best - random): 1 = as good as the ground truth, 0 = no better than random."""
    return float((model - random) / (best - random)) if best > random else float("nan")


def _cuts(start_ms: int, end_ms: int, opts: FreshnessOptions) -> list[int]:
    """Times at which the retrained arm gets a new model: the first cut, then every retrain_days while a day of
    data remains to measure it on."""
    first = start_ms + int(opts.first_cut_day * DAY_MS)
    if first - int(opts.train_days * DAY_MS) < start_ms or first + DAY_MS > end_ms:
        span = (end_ms - start_ms) / DAY_MS
        raise ValueError(
            f"first_cut_day={opts.first_cut_day} with train_days={opts.train_days} needs data before the window and "
            f"a day after it; the data spans {span:.1f} days"
        )
    step = int(opts.retrain_days * DAY_MS)
    return list(range(first, end_ms - DAY_MS + 1, step))


def _train_models(dataset: Path, work: Path, cut: int, opts: FreshnessOptions, ctx: dict) -> dict:
    """The user embeddings and one Pinnability per variant for the window ending at `cut`."""
    from components.train.examples import ranking_examples
    from components.train.retrieval import RetrievalTraining, load_two_tower, train_retrieval_local, user_embeddings

    cat, ev, log = ctx["cat"], ctx["ev"], ctx["log"]
    window_start = cut - int(opts.train_days * DAY_MS)
    tower_dir = work / f"tower_{cut}"
    train_retrieval_local(dataset, tower_dir, window_start, RetrievalTraining(seed=opts.seed))
    users = np.arange(cat.n_users)
    user_emb = torch.from_numpy(
        user_embeddings(load_two_tower(tower_dir), cat, log, users, np.full(len(users), window_start))
    )
    rows = ranking_examples(ev, cat, log, window_start, cut, opts.max_train, opts.seed)
    rows.pop("request_id")
    content = torch.from_numpy(cat.content)
    config = {**asdict(RankingTraining(epochs=opts.epochs, batch_size=opts.batch_size)), "seed": opts.seed}
    models = {
        kind: train_in_process(
            PinnabilityConfig(n_interests=cat.n_interests, sequence=SequenceConfig(kind=kind)),
            content,
            user_emb,
            rows,
            config,
        )  # fmt: skip
        for kind in opts.variants
    }
    return {"cut_ms": cut, "user_emb": user_emb, "models": models, "train_impressions": len(rows["labels"])}


def _truth_scorer(dataset: Path, ev):
    """A function giving the ground truth's affinity logit of each held-out impression at its request time, or None
    for real data. The truth and the request times are read once, not once per measured day."""
    path = Path(dataset) / "ground_truth.npz"
    if not path.exists():
        return None
    from components.data.world.truth import GroundTruth

    truth = GroundTruth.load(path)
    first = ev[ev.action == "impression"].groupby("request_id")["ts"].min()

    def logits(held: dict) -> np.ndarray:
        ts = first.reindex(held["request_id"]).to_numpy().astype(np.int64)
        return truth.logits(held["user_id"], held["pin_id"], ts)

    return logits


def _measure(probs: np.ndarray, held: dict) -> dict:
    rid, labels = held["request_id"], held["labels"]
    return {
        "hit@3_repin": hit_at_k(rid, probs[:, REPIN], labels[:, REPIN]),
        "served_hit@3_hide": hit_at_k(rid, served_score(probs), labels[:, HIDE]),
    }


def run(dataset: Path, out_dir: Path, opts: FreshnessOptions, progress=print) -> dict:
    """Train the arms, measure every day, write freshness.json and freshness.md into `out_dir`, return the result."""
    from components.data.dataset import Dataset
    from components.train.examples import Catalog, ranking_examples, read_events

    dataset, out_dir = Path(dataset), Path(out_dir)
    ds = Dataset(dataset)
    cat = Catalog.load(ds)
    ev, log = read_events(ds)
    ctx = {"cat": cat, "ev": ev, "log": log}
    start_ms, end_ms = int(ev.ts.min()), int(ev.ts.max()) + 1
    cuts = _cuts(start_ms, end_ms, opts)
    work = out_dir / "work"
    t0 = time.perf_counter()
    trained = []
    for cut in cuts:
        trained.append(_train_models(dataset, work, cut, opts, ctx))
        progress(f"trained the models of the window ending on day {(cut - start_ms) / DAY_MS:.1f}")
    truth_logits = _truth_scorer(dataset, ev)
    days = []
    for day_start in range(cuts[0], end_ms - DAY_MS + 1, DAY_MS):
        held = ranking_examples(ev, cat, log, day_start, day_start + DAY_MS, None, opts.seed)
        if not held["labels"][:, REPIN].any():
            continue
        latest = max((t for t in trained if t["cut_ms"] <= day_start), key=lambda t: t["cut_ms"])
        row = {
            "day": round((day_start - start_ms) / DAY_MS, 2),
            "impressions": int(len(held["labels"])),
            "repins": int(held["labels"][:, REPIN].sum()),
            "retrained_model_day": round((latest["cut_ms"] - start_ms) / DAY_MS, 2),  # its window's end
            "random": {
                "hit@3_repin": random_hit_at_k(held["request_id"], held["labels"][:, REPIN]),
                "served_hit@3_hide": random_hit_at_k(held["request_id"], held["labels"][:, HIDE]),
            },  # fmt: skip
        }
        truth = None if truth_logits is None else truth_logits(held)
        if truth is not None:
            row["ground_truth"] = {
                "hit@3_repin": hit_at_k(held["request_id"], truth, held["labels"][:, REPIN]),
                "served_hit@3_hide": hit_at_k(held["request_id"], truth, held["labels"][:, HIDE]),
            }
        for kind in opts.variants:
            for arm, model_set in (("stale", trained[0]), ("retrained", latest)):
                m = _measure(score(model_set["models"][kind], model_set["user_emb"], held), held)
                if truth is not None:
                    m["lift_share"] = lift_share(
                        m["hit@3_repin"], row["random"]["hit@3_repin"], row["ground_truth"]["hit@3_repin"]
                    )
                row[f"{kind}/{arm}"] = m
        days.append(row)
    result = {
        "dataset": str(dataset),
        "options": asdict(opts),
        "retrain_days_from_start": [round((c - start_ms) / DAY_MS, 2) for c in cuts],
        "train_impressions": [t["train_impressions"] for t in trained],
        "seconds": round(time.perf_counter() - t0, 1),
        "days": days,
        "summary": summarise(days, opts.variants),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "freshness.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "freshness.md").write_text(markdown(result))
    return result


def summarise(days: list[dict], variants) -> dict:
    """Per variant: the stale arm's mean HIT@3 repin (and lift share) in the first and the last third of the days
    (decay), and both arms' means over the days the retrained arm had a newer model (recovery)."""
    third = max(1, len(days) // 3)
    later = [d for d in days if d["retrained_model_day"] > days[0]["retrained_model_day"]]
    out = {}
    for kind in variants:
        out[kind] = {
            "stale_first_third": {m: _mean(days[:third], f"{kind}/stale", m) for m in ("hit@3_repin", "lift_share")},
            "stale_last_third": {m: _mean(days[-third:], f"{kind}/stale", m) for m in ("hit@3_repin", "lift_share")},
            "after_first_retrain": {
                arm: {m: _mean(later, f"{kind}/{arm}", m) for m in ("hit@3_repin", "served_hit@3_hide", "lift_share")}
                for arm in ("stale", "retrained")
            },
            "days_after_first_retrain": len(later),
        }
    return out


# The columns `summary_cells` fills, after the variant (and, in a multi-world table, the world).
SUMMARY_HEAD = (
    "stale, first third | stale, last third | stale after retrain | retrained | HIT@3 repin stale | retrained | "
    "served hide stale | retrained"
)


def summary_cells(s: dict) -> list[str]:
    """One variant's `summarise` figures as table cells, in SUMMARY_HEAD's order."""
    after = s["after_first_retrain"]
    return [
        f"{s['stale_first_third']['lift_share']:.3f}",
        f"{s['stale_last_third']['lift_share']:.3f}",
        f"{after['stale']['lift_share']:.3f}",
        f"{after['retrained']['lift_share']:.3f}",
        f"{after['stale']['hit@3_repin']:.4f}",
        f"{after['retrained']['hit@3_repin']:.4f}",
        f"{after['stale']['served_hit@3_hide']:.4f}",
        f"{after['retrained']['served_hit@3_hide']:.4f}",
    ]


def _mean(rows: list[dict], column: str, metric: str) -> float:
    values = [r[column].get(metric, float("nan")) for r in rows]
    return float(np.nanmean(values)) if values and not np.isnan(values).all() else float("nan")


def markdown(r: dict) -> str:
    o = r["options"]
    variants = o["variants"]
    has_truth = "ground_truth" in r["days"][0]
    head = ["day", "repins", "random", *(["ground truth"] if has_truth else [])]
    head += [f"{k} {arm}" for k in variants for arm in ("stale", "retrained")]
    rows = []
    for d in r["days"]:
        cells = [f"{d['day']:.0f}", str(d["repins"]), f"{d['random']['hit@3_repin']:.3f}"]
        if has_truth:
            cells.append(f"{d['ground_truth']['hit@3_repin']:.3f}")
        for k in variants:
            for arm in ("stale", "retrained"):
                m = d[f"{k}/{arm}"]
                share = f" ({m['lift_share']:.2f})" if "lift_share" in m else ""
                cells.append(f"{m['hit@3_repin']:.3f}{share}")
        rows.append("| " + " | ".join(cells) + " |")
    summary = ["| " + " | ".join([k, *summary_cells(s)]) + " |" for k, s in r["summary"].items()]
    return f"""### Freshness day by day on {r["dataset"]} (`homefeed eval freshness`)

Each model trains on {o["train_days"]:g} days of impressions (at most {o["max_train"]:,},
{o["epochs"]} epochs). The stale arm keeps the model of the window ending on day {o["first_cut_day"]:g}; the retrained
arm gets a new one every {o["retrain_days"]:g} days (days {", ".join(f"{c:g}" for c in r["retrain_days_from_start"])}).
Each day: HIT@3 repin, and in brackets the lift share, (model - random) / (ground truth - random).

| {" | ".join(head)} |
|{"---|" * len(head)}
{chr(10).join(rows)}

Summary (lift share of the stale arm in the first and last third of the days; both arms over the
{next(iter(r["summary"].values()))["days_after_first_retrain"]} days after the first retraining):

| variant | {SUMMARY_HEAD} |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(summary)}
"""
