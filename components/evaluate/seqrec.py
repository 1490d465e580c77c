"""Sequential recommendation on `user item` files, measured with the SASRec protocol, so the sequence-aware user
tower can be compared with the published numbers of SASRec / BERT4Rec on the same files.

The protocol, as the design guide states it: per user, time-ordered items; last item = test, second-last =
validation, rest = train (users with < 3 items are train-only); the test input includes the validation item;
candidates = the held-out item + 100 negatives drawn uniformly from items the user never interacted with; HR@10 and
NDCG@10; with more than 10,000 users, a random 10,000 are evaluated. The popularity baseline (train-part item
frequency) is scored on the very same candidates.

The two-tower trains through `fit_retrieval` like every other retrieval experiment. These files carry no segment,
interest, declared interests or content, so those inputs are constants (segment 0, one interest, zero content):
the towers see only the user id, the last RETRIEVAL_SEQ_LEN items and the item id.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from components.metrics import hr_ndcg_at_k, sampled_rank
from components.train.examples import RETRIEVAL_SEQ_LEN
from components.train.retrieval import RetrievalTraining, TrainingData, fit_retrieval, load_two_tower

FORMATS = {"sasrec": ("user item", 2), "movielens": ("user item rating timestamp", 4)}
N_NEGATIVES = 100
K = 10
# The defaults `homefeed eval seqrec` trains with, chosen on Beauty's validation NDCG@10 (the test item unseen):
# 5 epochs, batch 2048, lr 1e-2, id_dropout 0.2 gave 0.334 (HR@10 0.507); lr 3e-3 0.318 (0.332 at 10 epochs);
# id_dropout 0.5 0.315, 0.0 0.334 (HR@10 0.501); batch 512 at lr 2e-3, 3 epochs 0.316. Large batches: more in-batch
# negatives and fewer optimizer steps over the dense ID tables, so about 35 s of training on 2 idle cores.
SEQREC_TRAINING = RetrievalTraining(epochs=5, batch_size=2048, lr=1e-2, id_dropout=0.2, crossing="none")


class SeqrecDataError(ValueError):
    """The file cannot be evaluated: wrong format, or nothing to evaluate."""


@dataclass
class Sequences:
    """Every user's items in time order, as flat arrays sorted by (user, time): dense ids 0..U-1 and 0..P-1, and the
    original ids they stand for."""

    user: np.ndarray  # [A] dense user of each action
    item: np.ndarray  # [A] dense item of each action
    pos: np.ndarray  # [A] the action's position in its user's sequence
    length: np.ndarray  # [A] the length of its user's sequence
    user_ids: np.ndarray  # [U] original user id of each dense id
    item_ids: np.ndarray  # [P] original item id of each dense id

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def training_options(**overrides) -> RetrievalTraining:
    """SEQREC_TRAINING with `overrides` (epochs, lr, batch_size, id_dropout, seed, num_workers, ...)."""
    return replace(SEQREC_TRAINING, **overrides)


def _read_ints(path: Path, n_fields: int, what: str) -> np.ndarray:
    """[lines, n_fields] int64; the first malformed line is an error naming its number (a sequence evaluation on
    silently dropped lines would measure a different dataset)."""
    rows = []
    with open(path, encoding="latin-1") as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != n_fields:
                raise SeqrecDataError(
                    f"{path}:{line_no}: expected {n_fields} fields ({what}), got {len(parts)}: {line.strip()[:80]!r}"
                )
            try:
                rows.append([int(p) for p in parts])
            except ValueError:
                raise SeqrecDataError(f"{path}:{line_no}: not integers ({what}): {line.strip()[:80]!r}") from None
    if not rows:
        raise SeqrecDataError(f"{path} holds no {what} lines")
    return np.asarray(rows, dtype=np.int64)


def load_sequences(path: Path, fmt: str = "sasrec") -> Sequences:
    """`sasrec`: `user item` lines, file order = time order. `movielens`: u.data (or its folder), every rating an
    interaction (as SASRec treats MovieLens), ordered by timestamp, ties by line order."""
    path = Path(path)
    if fmt not in FORMATS:
        raise SeqrecDataError(f"unknown format {fmt!r}; choose from {sorted(FORMATS)}")
    if fmt == "movielens" and path.is_dir():
        path = path / "u.data"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file of {FORMATS[fmt][0]} lines")
    rows = _read_ints(path, FORMATS[fmt][1], FORMATS[fmt][0])
    user, item = rows[:, 0], rows[:, 1]
    time_key = rows[:, 3] if fmt == "movielens" else np.zeros(len(rows), dtype=np.int64)
    order = np.lexsort((np.arange(len(rows)), time_key, user))  # by user, then time, then line (stable)
    user_ids, user = np.unique(user[order], return_inverse=True)
    item_ids, item = np.unique(item[order], return_inverse=True)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    counts = np.diff(np.r_[starts, len(user)])
    pos = np.arange(len(user)) - np.repeat(starts, counts)
    return Sequences(user, item, pos, np.repeat(counts, counts), user_ids, item_ids)


def history_before(seq: Sequences, rows: np.ndarray) -> np.ndarray:
    """[len(rows), RETRIEVAL_SEQ_LEN] the items each action's user took before it, newest first, -1 padding: the
    user-tower input as of that action."""
    out = np.full((len(rows), RETRIEVAL_SEQ_LEN), -1, dtype=np.int64)
    for j in range(1, RETRIEVAL_SEQ_LEN + 1):
        ok = seq.pos[rows] >= j
        out[ok, j - 1] = seq.item[rows[ok] - j]
    return out


@dataclass
class Split:
    """Leave-one-out: the rows (indices into `Sequences`' flat arrays) of the train part, and per evaluable user
    (>= 3 items) the row of its validation and of its test item."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def leave_one_out(seq: Sequences) -> Split:
    evaluable = seq.length >= 3
    val = np.flatnonzero(evaluable & (seq.pos == seq.length - 2))
    test = np.flatnonzero(evaluable & (seq.pos == seq.length - 1))
    if not len(test):
        raise SeqrecDataError("no user has 3 or more items: nothing to evaluate (the last two are the held-out ones)")
    train = np.flatnonzero(~evaluable | (seq.pos < seq.length - 2))
    return Split(train, val, test)


def training_data(seq: Sequences, split: Split) -> TrainingData:
    """One positive per train item after a user's first: target the item, input the up to 20 train items before it.
    Only train rows are targets or inputs (a train row's predecessors are train rows too)."""
    rows = split.train[seq.pos[split.train] >= 1]
    pins = seq.item[rows]
    n = len(rows)
    counts = np.bincount(pins, minlength=seq.n_items).astype(np.float64)
    examples = {
        "user_id": seq.user[rows].astype(np.int64),
        "segment": np.zeros(n, dtype=np.int64),
        "declared": np.zeros((n, 1), dtype=np.float32),
        "seq_pin_ids": history_before(seq, rows),
        "pin_id": pins.astype(np.int64),
        "interest": np.zeros(n, dtype=np.int64),
        "log_q": np.log(counts[pins] / counts.sum()).astype(np.float32),
    }
    content = np.zeros((seq.n_items, 1), dtype=np.float32)
    return TrainingData(examples, content, np.zeros(seq.n_items, dtype=np.int64), seq.n_users, n_interests=1)


def sample_negatives(history: np.ndarray, n_items: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` distinct items drawn uniformly from those not in `history` (sorted unique); all of them, in random order,
    when fewer than `n` remain (a tiny catalogue: the row is then shorter, never padded with seen items). Draws
    ranks in the complement and maps rank r to the r-th unseen item (seen item h_j has h_j - j unseen items below
    it), so no per-user list of unseen items is built: 54k items x 10k users would be slow."""
    available = n_items - len(history)
    r = rng.choice(available, size=min(n, available), replace=False)
    return r + np.searchsorted(history - np.arange(len(history)), r, side="right")


def candidates(seq: Sequences, held_out: np.ndarray, rng: np.random.Generator, n: int = N_NEGATIVES) -> np.ndarray:
    """[len(held_out), 1 + n]: column 0 the held-out item, then negatives never in the user's whole history
    (-1 pads a row whose catalogue ran short)."""
    starts = held_out - seq.pos[held_out]
    out = np.full((len(held_out), 1 + n), -1, dtype=np.int64)
    out[:, 0] = seq.item[held_out]
    for i, (lo, length) in enumerate(zip(starts, seq.length[held_out], strict=True)):
        neg = sample_negatives(np.unique(seq.item[lo : lo + length]), seq.n_items, n, rng)
        out[i, 1 : 1 + len(neg)] = neg
    return out


def ranks(scores: np.ndarray, cand: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The held-out item's 0-based rank among its candidates: negatives scoring strictly higher, ties broken at
    random (not counted against the held-out item, which would understate popularity's integer scores); padding
    never competes."""
    scores = np.where(cand >= 0, scores, np.nan)
    return sampled_rank(scores[:, 0], scores[:, 1:], rng)


@torch.no_grad()
def tower_scores(model, seq: Sequences, held_out: np.ndarray, cand: np.ndarray, batch: int = 4096) -> np.ndarray:
    """user vector · item vector for each candidate; the user vector as of the held-out item (its user id and the
    items before it: for the test item these include the validation item)."""
    item_ids = torch.arange(seq.n_items)
    pin_vec = model.pin(item_ids, torch.zeros_like(item_ids))  # every item once, then gathered per candidate
    out = []
    for lo in range(0, len(held_out), batch):
        rows = held_out[lo : lo + batch]
        b = len(rows)
        u = model.user(
            torch.from_numpy(seq.user[rows].astype(np.int64)),
            torch.zeros(b, dtype=torch.int64),
            torch.zeros(b, 1),
            torch.from_numpy(history_before(seq, rows)),
        )
        c = torch.from_numpy(cand[lo : lo + batch].clip(min=0))
        out.append(torch.einsum("bd,bcd->bc", u, pin_vec[c]).numpy())
    return np.concatenate(out)


def evaluate_seqrec(
    path: Path,
    fmt: str,
    out_dir: Path,
    opts: RetrievalTraining,
    max_users: int = 10_000,
    on_ray: bool = True,
    command: str = "",
) -> dict:
    """Split, train the two-tower on the train part, score validation and test candidates with it and with
    popularity; writes seqrec_eval.json and seqrec_eval.md to `out_dir` and returns the result."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    seq = load_sequences(path, fmt)
    split = leave_one_out(seq)
    data = training_data(seq, split)

    rng = np.random.default_rng(opts.seed)
    chosen = np.arange(len(split.test))
    if len(chosen) > max_users:
        chosen = np.sort(rng.choice(len(chosen), size=max_users, replace=False))
    held = {"test": split.test[chosen], "validation": split.val[chosen]}
    cand = {name: candidates(seq, rows, rng) for name, rows in held.items()}

    t0 = time.perf_counter()
    summary = fit_retrieval(data, out_dir / "model", opts, on_ray=on_ray)
    seconds = time.perf_counter() - t0
    model = load_two_tower(out_dir / "model")

    popularity = np.bincount(seq.item[split.train], minlength=seq.n_items).astype(np.float64)
    models: dict[str, dict] = {"two_tower": {}, "popularity": {}}
    for name, rows in held.items():
        scores = {"two_tower": tower_scores(model, seq, rows, cand[name]), "popularity": popularity[cand[name]]}
        for model_name, s in scores.items():
            # each its own tie-breaking stream: popularity's numbers do not move with the tower's scores
            models[model_name][name] = hr_ndcg_at_k(ranks(s, cand[name], np.random.default_rng(opts.seed + 1)), K)

    n_train = int(summary["train_examples"])
    result = {
        "dataset": Path(path).name,
        "format": fmt,
        "counts": {
            "users": seq.n_users,
            "items": seq.n_items,
            "actions": len(seq.item),
            "evaluated_users": len(chosen),
            "train_examples": n_train,
        },
        "models": models,
        "training": {
            **{k: v for k, v in asdict(opts).items() if k in ("epochs", "lr", "batch_size", "id_dropout", "seed")},
            "crossing": opts.crossing,
            "runner": f"ray:{opts.num_workers}" if on_ray else "local",
            "seconds": round(seconds, 1),  # wall time of fit_retrieval: example files, Ray start, all epochs
            "samples_per_s": round(n_train * opts.epochs / seconds),  # end to end over that wall time
            "final_loss": summary["train_loss"],
        },
        "negatives": N_NEGATIVES,
        "wall_s": round(time.perf_counter() - start, 1),  # load, split, train, evaluate
        "command": command,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "seqrec_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "seqrec_eval.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    """One dataset's table, with what was measured and how it was trained above it."""
    c, t = result["counts"], result["training"]
    lines = [
        f"### Sequential recommendation, SASRec protocol: {result['dataset']} ({result['format']})",
        "",
        f"{c['users']:,} users, {c['items']:,} items, {c['actions']:,} actions; {c['evaluated_users']:,} users "
        f"evaluated (leave-one-out, held-out item + {result['negatives']} uniform unseen negatives, ties broken at "
        f"random). Two-tower: "
        f"{c['train_examples']:,} train examples, {t['epochs']} epochs, lr {t['lr']}, batch {t['batch_size']}, "
        f"id_dropout {t['id_dropout']}, {t['runner']}: trained in {t['seconds']:.0f} s ({t['samples_per_s']:,} "
        f"samples/s), {result['wall_s']:.0f} s in all.",
        "",
        "| model | test HR@10 | test NDCG@10 | val HR@10 | val NDCG@10 |",
        "|---|---|---|---|---|",
    ]
    for name, m in result["models"].items():
        test, val = m["test"], m["validation"]
        lines.append(
            f"| {name} | {test['HR@10']:.4f} | {test['NDCG@10']:.4f} | {val['HR@10']:.4f} | {val['NDCG@10']:.4f} |"
        )
    if result.get("command"):
        lines += ["", f"Reproduce: `{result['command']}`."]
    return "\n".join(lines) + "\n"
