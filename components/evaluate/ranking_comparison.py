"""`homefeed eval ranking`: seed 003's offline comparison of user-sequence modules inside Pinnability, on our data.

Every variant is the same Pinnability (same features, DCN v2, heads, optimiser, examples) with a different sequence
module (models/ranking/sequence.py): none (the reference row), average pooling, CNN, RNN, LSTM, a vanilla
transformer over pin embeddings, TransAct v1.0 and v1.1, v1.1 without the action embedding, the early fusion or the
random time-window mask, and v1.1 with the mask on every training row as the paper has it (the default masks a fifth
of the rows; `SequenceConfig.mask_probability` says why). Each trains with several seeds on the ranking window and is measured on the holdout:

- HIT@3 per head (GUIDE §7: per request, rank the impressed pins by the head's score; the share of the pins with
  that action that land in the top 3), mean ± std over seeds, and the relative change against the no-sequence
  model, the form of the paper's table. "Hide: lower is better" only holds for the order users are served: ranked
  by the hide head itself, a better hide head puts more hides on top. So the hide figure compared with the paper
  is HIT@3 of hides in the served order (the heads blended as serving blends them, `BLEND`); the hide head's own
  HIT@3 is reported beside it;
- AUC per head;
- HIT@3 per segment (core vs non-core);
- a diversity figure: the share of each request's top 3 (by the repin head) whose interest is the interest of the
  user's last action. Higher means more concentrated on the latest intent; the time-window mask is meant to lower
  it (the paper's motivation: without it the model over-serves what the user just did).

Two halves, so the training half runs where a GPU is: `prepare` builds the examples, the pretrained user
embeddings (the retrieval user tower, trained here with TorchRec) and the catalogue lookups into plain .npy files;
`run` trains and measures the variants with torch alone (no TorchRec, no Ray), on any device. From a fresh clone
`homefeed eval ranking` does both on this machine; `python -m components.evaluate.ranking_comparison --data DIR
--device cuda` runs the second half on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from components.metrics import auc, hit_at_k, rank_in_request
from components.train.ranking import RankingTraining, score, served_score, train_in_process
from models.ranking.pinnability import HEADS, PinnabilityConfig
from models.ranking.sequence import SequenceConfig

REFERENCE = "none"
CORE = 0  # contracts.SEGMENTS.index("core"); kept literal so this module imports nothing of the data layer

# The paper's offline table, relative change vs. no sequence in % (HIT@3 repin, hide), as GUIDE §7 quotes it.
PAPER = {
    "avgpool": (0.21, -1.61),
    "cnn": (0.08, -1.29),
    "rnn": (-1.05, -2.46),
    "lstm": (-0.75, -2.98),
    "transformer": (1.56, -8.45),
    "transact_v11": (9.40, -14.86),
}


def default_variants() -> dict[str, SequenceConfig]:
    v11 = SequenceConfig(kind="transact_v11")
    return {
        "none": SequenceConfig(kind="none"),
        "avgpool": SequenceConfig(kind="avgpool"),
        "cnn": SequenceConfig(kind="cnn"),
        "rnn": SequenceConfig(kind="rnn"),
        "lstm": SequenceConfig(kind="lstm"),
        "transformer": SequenceConfig(kind="transformer"),
        "transact_v10": SequenceConfig(kind="transact_v10"),
        "transact_v11": v11,
        "v11 without action embedding": replace(v11, action_embedding=False),
        "v11 without early fusion": replace(v11, early_fusion=False),
        "v11 without time-window mask": replace(v11, time_window_mask=False),
        "v11 with the mask on every row (paper)": replace(v11, mask_probability=1.0),
    }


# --- the data half (this machine: TorchRec for the user embeddings) -------------------------------------------


def prepare(dataset: Path, out_dir: Path, holdout_days: float, ranking_days: float, max_train: int, seed: int) -> Path:
    """Write train.npz, eval.npz, content.npy, user_emb.npy, pin_interest.npy and meta.json into `out_dir/data`.

    The user embedding is the plain retrieval user tower's (trained on everything before the cut-off) as of the
    ranking window's start, the stand-in for the paper's pretrained PinnerSAGE embedding, shared by every variant.
    Train examples are a sample of the ranking window's impressions; eval examples are every impression of the
    holdout (whole requests, which HIT@3 ranks within)."""
    from components.data.dataset import Dataset
    from components.data.split import time_split
    from components.train.examples import Catalog, ranking_examples, read_events
    from components.train.retrieval import RetrievalTraining, load_two_tower, train_retrieval_local, user_embeddings

    dataset, data_dir = Path(dataset), Path(out_dir) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    split = time_split(dataset, holdout_days, ranking_days)
    ds = Dataset(dataset)
    cat = Catalog.load(ds)
    ev, log = read_events(ds)
    retrieval_dir = Path(out_dir) / "retrieval"
    train_retrieval_local(dataset, retrieval_dir, split.train_end_ms, RetrievalTraining(seed=seed))
    users = np.arange(cat.n_users)
    at = np.full(len(users), split.ranking_start_ms)
    np.save(data_dir / "user_emb.npy", user_embeddings(load_two_tower(retrieval_dir), cat, log, users, at))
    train = ranking_examples(ev, cat, log, split.ranking_start_ms, split.train_end_ms, max_train, seed)
    held = ranking_examples(ev, cat, log, split.train_end_ms, split.end_ms, None, seed)
    _save_compact(data_dir / "train.npz", train)
    _save_compact(data_dir / "eval.npz", held)
    np.save(data_dir / "content.npy", cat.content)
    np.save(data_dir / "pin_interest.npy", cat.pin_interest)
    meta = {"dataset": str(dataset), "split": asdict(split), "n_interests": cat.n_interests}
    (data_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return data_dir


# Narrow types on disk (the files travel to the GPU machine, and 100-long sequences dominate their size); `_load`
# widens them back to the model's input contract.
_COMPACT = {"seq_pin_ids": np.int32, "seq_actions": np.int8, "seq_age_h": np.float16}


def _save_compact(path: Path, examples: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **{k: v.astype(_COMPACT.get(k, v.dtype)) for k, v in examples.items()})


def _widen(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    wide = {"seq_pin_ids": np.int64, "seq_actions": np.int64, "seq_age_h": np.float32}
    return {k: v.astype(wide[k]) if k in wide else v for k, v in arrays.items()}


# --- the training half (torch only: runs on the GPU machine too) ----------------------------------------------


def _load(data_dir: Path) -> tuple[dict, dict, torch.Tensor, torch.Tensor, np.ndarray, dict]:
    data_dir = Path(data_dir)
    with np.load(data_dir / "train.npz") as f:
        train = _widen({k: f[k] for k in f.files if k != "request_id"})
    with np.load(data_dir / "eval.npz") as f:
        held = _widen({k: f[k] for k in f.files})
    content = torch.from_numpy(np.load(data_dir / "content.npy"))
    user_emb = torch.from_numpy(np.load(data_dir / "user_emb.npy"))
    meta = json.loads((data_dir / "meta.json").read_text())
    return train, held, content, user_emb, np.load(data_dir / "pin_interest.npy"), meta


def concentration(request_id: np.ndarray, score_: np.ndarray, cand_interest, last_interest, k: int = 3) -> float:
    """Share of each request's top-k pins (by `score_`) whose interest is the interest of the user's last action;
    requests whose user has no action yet (last_interest < 0) are left out."""
    top = (rank_in_request(request_id, score_) <= k) & (last_interest >= 0)
    return float((cand_interest[top] == last_interest[top]).mean()) if top.any() else float("nan")


def measure(probs: np.ndarray, held: dict, pin_interest: np.ndarray) -> dict:
    """HIT@3 and AUC per head, HIT@3 per segment and the concentration figure for one model's holdout scores."""
    rid, labels = held["request_id"], held["labels"]
    served = served_score(probs)
    out: dict = {"hit@3": {}, "served_hit@3": {}, "auc": {}, "segments": {}}
    for j, head in enumerate(HEADS):
        out["hit@3"][head] = hit_at_k(rid, probs[:, j], labels[:, j])
        out["served_hit@3"][head] = hit_at_k(rid, served, labels[:, j])
        out["auc"][head] = auc(probs[:, j], labels[:, j])
    for name, mask in (("core", held["segment"] == CORE), ("non-core", held["segment"] != CORE)):
        out["segments"][name] = {
            head: hit_at_k(rid[mask], probs[mask, j], labels[mask, j]) for j, head in enumerate(HEADS)
        }
    last = held["seq_pin_ids"][:, 0]
    last_interest = np.where(last >= 0, pin_interest[np.maximum(last, 0)], -1)
    repin = HEADS.index("repin")
    out["concentration"] = concentration(rid, probs[:, repin], held["interest"], last_interest)
    return out


def _mean_std(values: list[float]) -> list[float]:
    return [float(np.mean(values)), float(np.std(values))]


def run(data_dir: Path, out_dir: Path, variants: dict[str, SequenceConfig], seeds: int, opts: RankingTraining,
        device: str = "cpu") -> dict:  # fmt: skip
    """Train every variant with seeds 0..seeds-1 on `device`, measure it on the holdout, write ranking_eval.json and
    ranking_eval.md into `out_dir` and return the result. The first variant is the reference of relative changes."""
    train, held, content, user_emb, pin_interest, meta = _load(data_dir)
    out_dir = Path(out_dir)
    dev = torch.device(device)
    runs: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    for name, seq_cfg in variants.items():
        runs[name] = []
        t0 = time.perf_counter()
        for seed in range(seeds):
            cfg = PinnabilityConfig(n_interests=meta["n_interests"], sequence=seq_cfg)
            model = train_in_process(cfg, content, user_emb, train, {**asdict(opts), "seed": seed}, dev)
            runs[name].append(measure(score(model, user_emb, held), held, pin_interest))
        seconds[name] = round((time.perf_counter() - t0) / seeds, 1)
    rand = np.random.default_rng(0).random((len(held["labels"]), len(HEADS))).astype(np.float32)
    result = {
        "dataset": meta["dataset"],
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "train_examples": int(len(train["labels"])),
        "eval_impressions": int(len(held["labels"])),
        "eval_requests": int(len(np.unique(held["request_id"]))),
        "seeds": seeds,
        "training": {k: v for k, v in asdict(opts).items() if k in ("epochs", "batch_size", "lr")},
        "reference": next(iter(variants)),
        "random": measure(rand, held, pin_interest),
        "variants": {name: _summary(runs[name], runs[next(iter(variants))], seconds[name]) for name in variants},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ranking_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "ranking_eval.md").write_text(markdown(result))
    return result


def _summary(runs: list[dict], reference: list[dict], seconds: float) -> dict:
    """Mean ± std over seeds, and the relative change (%) against the reference, paired by seed."""
    out: dict = {"train_s_per_seed": seconds, "segments": {}}
    for metric in ("hit@3", "served_hit@3", "auc"):
        out[metric] = {head: _mean_std([r[metric][head] for r in runs]) for head in HEADS}
    for metric in ("hit@3", "served_hit@3"):
        out[f"rel_{metric}_pct"] = {
            head: _mean_std(
                [100.0 * (r[metric][head] / ref[metric][head] - 1.0) for r, ref in zip(runs, reference, strict=True)]
            )
            for head in HEADS
        }
    for seg in ("core", "non-core"):
        out["segments"][seg] = {head: _mean_std([r["segments"][seg][head] for r in runs]) for head in HEADS}
    out["concentration"] = _mean_std([r["concentration"] for r in runs])
    return out


def _pm(v: list[float], digits: int = 4) -> str:
    return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def markdown(r: dict) -> str:
    ref = r["reference"]
    rows = []
    for name, v in r["variants"].items():
        paper = PAPER.get(name)
        repin, hide = v["hit@3"]["repin"], v["served_hit@3"]["hide"]
        d_repin, d_hide = v["rel_hit@3_pct"]["repin"], v["rel_served_hit@3_pct"]["hide"]
        rows.append(
            f"| {name} | {_pm(repin)} | {_pm(d_repin, 2)} | {'' if paper is None else f'{paper[0]:+.2f}'} | "
            f"{_pm(hide)} | {_pm(d_hide, 2)} | {'' if paper is None else f'{paper[1]:+.2f}'} | "
            f"{_pm(v['hit@3']['hide'])} | {v['auc']['repin'][0]:.4f} | {v['auc']['hide'][0]:.4f} | "
            f"{_pm(v['concentration'], 3)} | {v['train_s_per_seed']:.0f} |"
        )
    rnd = r["random"]
    segs = [
        f"| {name} | {_pm(v['segments']['core']['repin'])} | {_pm(v['segments']['non-core']['repin'])} |"
        for name, v in r["variants"].items()
    ]
    return f"""### Ranking: sequence modules inside Pinnability (`homefeed eval ranking`)

{r["train_examples"]:,} training impressions; holdout {r["eval_impressions"]:,} impressions in {r["eval_requests"]:,}
requests; {r["seeds"]} seeds per variant (mean ± std); {r["training"]["epochs"]} epochs, batch
{r["training"]["batch_size"]}, lr {r["training"]["lr"]}; trained on {r["device"]}. Relative changes are against
`{ref}` (paired by seed), beside the paper's offline table (TransAct, seed 003, as GUIDE §7 quotes it).
HIT@3 repin ranks each request by the repin head. HIT@3 hide (lower is better) counts hidden pins in the top 3 of
the served order (the heads blended as serving blends them); the hide head's own HIT@3 (higher: it finds the hides)
is beside it. Concentration: share of the top 3 (by repin) in the interest of the user's last action. Random
order: HIT@3 repin {rnd["hit@3"]["repin"]:.4f}, hide {rnd["served_hit@3"]["hide"]:.4f}.

| variant | HIT@3 repin | Δ repin % | paper Δ % | HIT@3 hide (served) | Δ hide % | paper Δ % | hide head HIT@3 | AUC repin | AUC hide | concentration | train s/seed |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

HIT@3 repin per segment:

| variant | core | non-core |
|---|---|---|
{chr(10).join(segs)}
"""


def main(argv: list[str] | None = None) -> None:
    """The training half alone, on prepared data: what a GPU machine runs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the `data` folder `prepare` wrote")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=RankingTraining.lr)
    parser.add_argument("--variants", help="comma-separated names (default: all)")
    args = parser.parse_args(argv)
    known = default_variants()
    chosen = args.variants.split(",") if args.variants else list(known)
    unknown = [c for c in chosen if c not in known]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(known)}")
    opts = RankingTraining(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    result = run(args.data, args.out, {c: known[c] for c in chosen}, args.seeds, opts, args.device)
    print(markdown(result))


if __name__ == "__main__":
    main()
