"""`homefeed eval retrieval`: retrieval variants trained on the same data and measured side by side on a time-split
holdout: recall@K overall, per segment (core vs non-core) and per interest, with the popularity baseline.

Relevance: the pins each user repinned after the cut-off; the user's embedding is computed as of the cut-off.
Ranking is exact (brute-force inner product over the whole corpus), the retrieval an ANN index approximates; an
interest filter keeps only that interest's pins, as the Milvus partition-key filter does at serving.

Per interest, three ways to retrieve one interest's pins are compared for a conditional model:
  - `unconditional`: the user's plain embedding over the whole corpus (what one query without a filter returns);
  - `filtered`: the plain embedding, searched within the interest only;
  - `conditional`: the embedding with that interest as the condition, searched within the interest (seed 000's
    conditional retrieval: interest early fusion + the interest filter in the ANN search).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from components.data.contracts import SEGMENTS
from components.data.dataset import Dataset
from components.metrics import ratio_ci, recall_at_k, recall_per_user, top_k
from components.train.examples import POSITIVE_ACTIONS, USER_INPUTS, Catalog, read_events, user_features
from components.train.retrieval import RetrievalTraining, load_two_tower, pin_embeddings, train_retrieval
from models.retrieval.multi_embedding import round_robin_merge, top_representative

CORE = SEGMENTS.index("core")
CAPSULES = 4  # the multi-embedding variant's K (retrieval sequences hold 20 actions)


@dataclass
class Variant:
    name: str
    description: str
    opts: RetrievalTraining = field(default_factory=RetrievalTraining)


def default_variants(epochs: int, seed: int) -> list[Variant]:
    """An ablation ladder: each variant adds one piece of seed 000 to the one before it, from the plain two-tower
    (no crossing, in-batch negatives only, unconditional) to the full model with multi-embedding retrieval."""
    plain = RetrievalTraining(epochs=epochs, seed=seed, crossing="none", conditional=False, random_negatives=0)
    mixed = replace(plain, random_negatives=256)
    masknet = replace(mixed, crossing="masknet")
    # DHEN's transformer needs a smaller step: on world:medium at 2e-3 its loss stalled high in one seed of two
    # (recall@100 0.30 and 0.31 against 0.40 at 1e-3), so the DHEN variants train at 1e-3
    dhen = replace(mixed, crossing="dhen", lr=1e-3)
    conditional = replace(dhen, conditional=True)
    multi = replace(conditional, capsules=CAPSULES)
    return [
        Variant("plain", "two-tower, fields concatenated, in-batch negatives with logQ", plain),
        Variant("+mixed-negatives", "plain + 256 uniform random negatives per batch", mixed),
        Variant("+masknet", "+mixed-negatives with MaskNet crossing", masknet),
        Variant("+dhen", "+mixed-negatives with DHEN (MaskNet, transformer, DCN v2, MLP) x2, lr 1e-3", dhen),
        Variant("+conditional", "+dhen with the interest field (conditional retrieval)", conditional),
        Variant("+multi", f"+conditional with {CAPSULES} interest capsules, round-robin merge", multi),
    ]


@torch.no_grad()
def _user_vectors(model, feats: dict[str, np.ndarray], condition: int | None = None) -> np.ndarray:
    args = [torch.from_numpy(feats[k]) for k in USER_INPUTS]
    cond = None if condition is None else torch.full((len(feats["user_id"]),), condition, dtype=torch.int64)
    return model.user(*args, cond).numpy()


def _recall(ranked: np.ndarray, relevant: list[set[int]], ks: tuple[int, ...]) -> dict[str, float]:
    return {str(k): round(v, 4) for k, v in recall_at_k(ranked, relevant, ks).items()}


@dataclass
class Holdout:
    """Who is evaluated and on what: users with repins after the cut-off, their relevant pins and features."""

    users: np.ndarray
    relevant: list[set[int]]
    core: np.ndarray  # bool per user
    feats: dict[str, np.ndarray]
    popular: np.ndarray  # pin ids by engagement before the cut-off, most first
    relevant_by_interest: dict[int, tuple[np.ndarray, list[set[int]]]]  # interest -> (row indices, relevant sets)

    @classmethod
    def build(cls, ds: Dataset, cat: Catalog, cut_ms: int, min_users_per_interest: int = 20) -> Holdout:
        ev, log = read_events(ds)
        future = ev[(ev.action == "repin") & (ev.ts >= cut_ms)]
        by_user = future.groupby("user_id").pin_id.apply(set)
        users = by_user.index.to_numpy()
        relevant = list(by_user)
        past = ev[ev.action.isin(POSITIVE_ACTIONS) & (ev.ts < cut_ms)]
        popular = past.pin_id.value_counts().index.to_numpy()
        feats = user_features(cat, log, users, np.full(len(users), cut_ms))
        per_interest: dict[int, tuple[np.ndarray, list[set[int]]]] = {}
        for interest in range(cat.n_interests):
            rows, sets = [], []
            for i, rel in enumerate(relevant):
                inside = {p for p in rel if cat.pin_interest[p] == interest}
                if inside:
                    rows.append(i)
                    sets.append(inside)
            if len(rows) >= min_users_per_interest:
                per_interest[interest] = (np.asarray(rows), sets)
        core = cat.user_segment[users] == CORE
        return cls(users, relevant, core, feats, popular, per_interest)


def _popularity(h: Holdout, cat: Catalog, ks: tuple[int, ...]) -> tuple[dict, np.ndarray]:
    kmax = max(ks)
    ranked = np.tile(h.popular[:kmax], (len(h.users), 1))
    out = {"overall": _recall(ranked, h.relevant, ks), "segments": {}, "interests": {}}
    for name, mask in (("core", h.core), ("non-core", ~h.core)):
        out["segments"][name] = _recall(ranked[mask], [r for r, m in zip(h.relevant, mask, strict=True) if m], ks)
    for interest, (rows, sets) in h.relevant_by_interest.items():
        inside = h.popular[cat.pin_interest[h.popular] == interest][:kmax]
        out["interests"][str(interest)] = {"filtered": _recall(np.tile(inside, (len(rows), 1)), sets, ks)}
    return out, ranked


@torch.no_grad()
def _capsule_searches(model, feats: dict[str, np.ndarray], pins: np.ndarray, kmax: int):
    """One exact search per capsule vector, capsules ordered most representative first (as serving orders them):
    ([U, K, kmax] pin ids, [U, K] valid)."""
    args = [torch.from_numpy(feats[k]) for k in USER_INPUTS]
    vecs, valid, weights = model.user.multi(*args)
    vecs, valid = top_representative(vecs, valid, weights, vecs.shape[1])
    b, k, d = vecs.shape
    return top_k(vecs.reshape(b * k, d).numpy(), pins, kmax).reshape(b, k, -1), valid.numpy()


def _merged(per: np.ndarray, ok: np.ndarray, kmax: int, k_serve: int) -> np.ndarray:
    """Multi-embedding retrieval served with the `k_serve` most representative vectors: their results merged round
    robin with duplicates dropped, as serving does; [U, kmax] pin ids."""
    return np.asarray(
        [round_robin_merge([per[i, j] for j in range(k_serve) if ok[i, j]], kmax) for i in range(len(per))]
    )


def _model_recall(model, h: Holdout, cat: Catalog, ks: tuple[int, ...]) -> tuple[dict, np.ndarray]:
    """Recall overall, per segment and per interest, and the [U, max(ks)] ranking it was measured on."""
    kmax = max(ks)
    pins = pin_embeddings(model, cat)
    users = _user_vectors(model, h.feats)
    # pin ids: the corpus is every pin id
    multi = model.cfg.capsules > 0
    if multi:
        per, ok = _capsule_searches(model, h.feats, pins, kmax)
        ranked = _merged(per, ok, kmax, model.cfg.capsules)
    else:
        ranked = top_k(users, pins, kmax)
    out = {"overall": _recall(ranked, h.relevant, ks), "segments": {}, "interests": {}}
    if multi:  # the same model served with fewer embeddings: 1 is single-embedding retrieval from it
        out["by_k_serve"] = {
            str(k): _recall(_merged(per, ok, kmax, k), h.relevant, ks) for k in range(1, model.cfg.capsules + 1)
        }
    for name, mask in (("core", h.core), ("non-core", ~h.core)):
        out["segments"][name] = _recall(ranked[mask], [r for r, m in zip(h.relevant, mask, strict=True) if m], ks)
    for interest, (rows, sets) in h.relevant_by_interest.items():
        ids = np.flatnonzero(cat.pin_interest == interest)
        res = {
            "unconditional": _recall(ranked[rows], sets, ks),
            "filtered": _recall(ids[top_k(users[rows], pins[ids], kmax)], sets, ks),
        }
        if model.cfg.conditional:
            feats = {k: v[rows] for k, v in h.feats.items()}
            cond = _user_vectors(model, feats, condition=interest)
            res["conditional"] = _recall(ids[top_k(cond, pins[ids], kmax)], sets, ks)
        out["interests"][str(interest)] = res
    return out, ranked


def evaluate_variants(dataset: Path, out_dir: Path, cut_ms: int, variants: list[Variant], ks=(100, 1000)) -> dict:
    """Train each variant on everything before `cut_ms` (Ray Train), measure it and the popularity baseline on the
    repins after it; write retrieval_eval.json and retrieval_eval.md into `out_dir` and return the result."""
    ds, out_dir = Dataset(dataset), Path(out_dir)
    cat = Catalog.load(ds)
    h = Holdout.build(ds, cat, cut_ms)
    result = {
        "dataset": str(dataset),
        "cut_ms": cut_ms,
        "users": int(len(h.users)),
        "core_users": int(h.core.sum()),
        "ks": list(ks),
        "variants": {},
    }
    result["popularity"], pop_ranked = _popularity(h, cat, ks)
    k0 = min(ks)
    per_user = {"popularity": recall_per_user(pop_ranked, h.relevant, k0)}
    for v in variants:
        t0 = time.perf_counter()
        summary = train_retrieval(dataset, out_dir / "models" / v.name, cut_ms, v.opts)
        train_s = time.perf_counter() - t0
        model = load_two_tower(out_dir / "models" / v.name)
        recall, ranked = _model_recall(model, h, cat, ks)
        per_user[v.name] = recall_per_user(ranked, h.relevant, k0)
        result["variants"][v.name] = {
            "description": v.description,
            "options": asdict(v.opts),
            "train_s": round(train_s, 1),
            "train_examples": summary["train_examples"],
            "train_loss": round(float(summary["train_loss"]), 4),
            "samples_per_s_per_worker": round(float(summary.get("samples_per_s", float("nan"))), 1),
            **recall,
            # the ratios the targets are stated in, with 95% paired bootstrap intervals over the evaluated users
            "vs_popularity": ratio_ci(per_user[v.name], per_user["popularity"]),
            "vs_first": ratio_ci(per_user[v.name], per_user[variants[0].name]),
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "retrieval_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "retrieval_eval.md").write_text(markdown(result))
    return result


def _mean_over_interests(per_interest: dict, key: str, k: str) -> float:
    values = [r[key][k] for r in per_interest.values() if key in r]
    return float(np.mean(values)) if values else float("nan")


def _ratio(r: list[float]) -> str:
    return f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]"


def markdown(r: dict) -> str:
    ks = [str(k) for k in r["ks"]]
    head = " | ".join(f"recall@{k}" for k in ks)
    variants = r["variants"]
    first = next(iter(variants), "the first variant")

    def row(name: str, m: dict, extra: str) -> str:
        recalls = " | ".join(f"{m['overall'][k]:.4f}" for k in ks)
        seg = m["segments"]
        return f"| {name} | {recalls} | {seg['core'][ks[0]]:.4f} | {seg['non-core'][ks[0]]:.4f} | {extra} |"

    rows = [row("popularity", r["popularity"], " | | | ")]
    for name, v in variants.items():
        ratios = f"{_ratio(v['vs_popularity'])} | {_ratio(v['vs_first'])}"
        rows.append(row(name, v, f"{ratios} | {v['train_s']:.0f} | {v['samples_per_s_per_worker']:,.0f}"))
    k0 = ks[0]
    irows = []
    for name, v in variants.items():
        cells = [f"{_mean_over_interests(v['interests'], key, k0):.4f}" for key in ("unconditional", "filtered")]
        cond = _mean_over_interests(v["interests"], "conditional", k0)
        cells.append("-" if np.isnan(cond) else f"{cond:.4f}")
        pairs = [(i["conditional"][k0], i["unconditional"][k0]) for i in v["interests"].values() if "conditional" in i]
        cells.append(f"{sum(c >= u for c, u in pairs)} of {len(pairs)}" if pairs else "-")
        irows.append(f"| {name} | {' | '.join(cells)} |")
    pop_filtered = _mean_over_interests(r["popularity"]["interests"], "filtered", k0)
    n_interests = len(r["popularity"]["interests"])
    serve_rows = [
        f"| {name} | " + " | ".join(f"{rec[k0]:.4f}" for rec in v["by_k_serve"].values()) + " |"
        for name, v in variants.items()
        if "by_k_serve" in v
    ]
    serving = ""
    if serve_rows:
        width = max(len(v["by_k_serve"]) for v in variants.values() if "by_k_serve" in v)
        serving = f"""
Multi-embedding models served with the K most representative capsule vectors (one exact search each, merged
round robin); K = 1 is single-embedding retrieval from the same model. recall@{k0}:

| variant | {" | ".join(f"K = {k}" for k in range(1, width + 1))} |
|---|{"---|" * width}
{chr(10).join(serve_rows)}
"""
    return f"""### Retrieval variants (`homefeed eval retrieval`)

{r["users"]:,} users with repins after the cut-off ({r["core_users"]:,} core); relevance = those repins; exact
inner-product search over the whole corpus. Ratios are of recall@{k0}, with 95% paired bootstrap intervals over
the evaluated users.

| variant | {head} | core recall@{ks[0]} | non-core recall@{ks[0]} | × popularity | × {first} | train s | samples/s per worker |
|---|{"---|" * len(ks)}---|---|---|---|---|---|
{chr(10).join(rows)}
{serving}
Per interest (mean over {n_interests} interests with ≥ 20 evaluated users; recall@{k0} of the user's repins in
that interest): the plain embedding over the whole corpus, the same embedding searched within the interest, and
the interest-conditioned embedding searched within the interest. Popularity within the interest: {pop_filtered:.4f}.

| variant | unconditional | filtered | conditional + filter | interests where conditional ≥ unconditional |
|---|---|---|---|---|
{chr(10).join(irows)}
"""
