"""Pretrain user and pin ID embeddings contrastively on Ray Train (seed 000), on a window that ends before the
retrieval model's training window, and check what they learned.

Temporal alignment (seed 000): the pretraining window is [window_end_ms - window_days, window_end_ms). A window that
reaches into the retrieval model's training window lets the ID vectors memorise the very labels the retrieval model
then trains on, and it overfits; so nothing at or after `window_end_ms` is read, and a guard checks it.

Output, in `out_dir`:
  id_embeddings.pt      {"user": FloatTensor[n_users, dim], "pin": FloatTensor[n_pins, dim], "window_start_ms",
                        "window_end_ms", "dim", "user_pairs": LongTensor[n_users], "pin_pairs": LongTensor[n_pins]}
                        The rows are the raw torchrec table rows (the model only uses their direction); *_pairs
                        count the window's (user, pin) pairs per id: an id with 0 kept its random initial vector.
  pretrain_metrics.json pairs, pin-pin pairs, epochs, final loss, seconds, samples/s, the window
  config.json           the model config (from the Ray checkpoint)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from components.data.dataset import Dataset
from components.metrics import recall_at_k
from components.train.examples import POSITIVE_ACTIONS
from components.train.ray_runner import fit_on_ray
from components.train.worker import TrainingOptions, batches, load_shard, report_epoch, world_size
from models.retrieval.id_pretrain import IdPretrainConfig, IdPretrainModel

DAY_MS = 86_400_000
EMBEDDINGS_FILE, METRICS_FILE = "id_embeddings.pt", "pretrain_metrics.json"


@dataclass
class PretrainOptions(TrainingOptions):
    epochs: int = 40  # tiny world: recall@100 0.120 after 20 epochs, 0.157 after 40
    batch_size: int = 128  # small batches, more steps: recall@100 0.078 at 128 against 0.061 at 512 (small world)
    lr: float = 1e-2
    dim: int = 32
    temperature: float = 0.1
    init_std: float = 0.1
    uniform_negatives: int = 512  # pins drawn uniformly from the corpus per step (mixed negative sampling); 0: off
    # Weight of the pin-pin co-engagement loss; 0 (the default) turns it off: measured, it lowers the user->pin
    # recall these embeddings are for (small world recall@100 0.050 at 0.5 against 0.068 at 0, batch 256).
    pin_pair_weight: float = 0.0
    pin_pair_minutes: float = 30.0  # two pins engaged by one user at most this far apart are a pin-pin pair


def positive_pairs(events: pd.DataFrame, start_ms: int, end_ms: int) -> pd.DataFrame:
    """Clicks and repins with start_ms <= ts < end_ms: columns user_id, pin_id, ts (in time order)."""
    pos = events[events.action.isin(POSITIVE_ACTIONS) & (events.ts >= start_ms) & (events.ts < end_ms)]
    return pos[["user_id", "pin_id", "ts"]].sort_values("ts", kind="stable").reset_index(drop=True)


def pin_pairs(pairs: pd.DataFrame, max_gap_ms: int) -> pd.DataFrame:
    """(a, b): two different pins one user engaged with one after the other, at most `max_gap_ms` apart."""
    p = pairs.sort_values(["user_id", "ts"], kind="stable")
    u, pin, ts = p.user_id.to_numpy(), p.pin_id.to_numpy(), p.ts.to_numpy()
    keep = (u[1:] == u[:-1]) & (ts[1:] - ts[:-1] <= max_gap_ms) & (pin[1:] != pin[:-1])
    return pd.DataFrame({"a": pin[:-1][keep], "b": pin[1:][keep]})


def _log_q(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """log of each id's share of the pairs: how often it turns up as an in-batch negative."""
    return np.log(counts[ids] / counts.sum()).astype(np.float32)


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    start = time.perf_counter()
    torch.manual_seed(config["seed"])
    shard = load_shard(config["pairs"])
    pp = load_shard(config["pin_pairs"]) if config["pin_pairs"] else None
    model = ray.train.torch.prepare_model(IdPretrainModel.from_config(config["model"]))
    core = model.module if hasattr(model, "module") else model
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    rank = ray.train.get_context().get_world_rank()
    rng = np.random.default_rng(config["seed"] + rank)
    bs, n_neg, n_pins = config["batch_size"], config["uniform_negatives"], config["model"]["n_pins"]
    samples, history = 0, []
    for _ in range(config["epochs"]):
        totals, steps = np.zeros(3), 0
        for b in batches(shard, bs, rng):
            parts = [b["pin_id"]]
            if pp is not None:  # a pin-pin batch of the same size, drawn with replacement from this worker's shard
                idx = torch.from_numpy(rng.integers(0, len(pp["a"]), size=bs))
                pp_b = {k: torch.from_numpy(v)[idx] for k, v in pp.items()}
                parts += [pp_b["a"], pp_b["b"]]
            neg_ids = torch.from_numpy(rng.integers(0, n_pins, size=n_neg)) if n_neg else None
            if neg_ids is not None:
                parts.append(neg_ids)
            u_vec, p_vec = model(b["user_id"], torch.cat(parts))  # one forward (one DDP all-reduce) for everything
            neg_vec = p_vec[len(p_vec) - n_neg :] if n_neg else None
            up = core.loss(
                u_vec, p_vec[:bs], b["user_id"], b["pin_id"], b["user_log_q"], b["pin_log_q"], neg_vec, neg_ids
            )
            loss, pp_loss = up, torch.zeros(())
            if pp is not None:
                a_vec, b_vec = p_vec[bs : 2 * bs], p_vec[2 * bs : 3 * bs]
                pp_loss = core.pin_pair_loss(
                    a_vec, b_vec, pp_b["a"], pp_b["b"], pp_b["a_log_q"], pp_b["b_log_q"], neg_vec, neg_ids
                )
                loss = up + config["pin_pair_weight"] * pp_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            totals += (loss.item(), up.item(), pp_loss.item())
            steps += 1
            samples += bs
        history.append([float(x) for x in totals / max(steps, 1)])
    # One report at the end, with the per-epoch losses in it: every ray.train.report is a barrier across workers,
    # and reporting each epoch cost about 2 s per epoch on 2 CPU workers (measured on the tiny world).
    metrics = {
        "train_loss": history[-1][0],
        "user_pin_loss": history[-1][1],
        "pin_pin_loss": history[-1][2],
        "loss_history": [h[0] for h in history],
        "steps_per_epoch": steps,
        "worker_samples": samples,
        "train_seconds": time.perf_counter() - start,
    }
    report_epoch(metrics, model if rank == 0 else None, config["model"])


def pretrain_ids(
    dataset_dir: Path,
    out_dir: Path,
    window_end_ms: int,
    window_days: float = 28.0,
    opts: PretrainOptions | None = None,
) -> dict:
    """Pretrain ID embeddings on the (user, pin) clicks and repins of [window_end_ms - window_days, window_end_ms)
    with `opts.num_workers` Ray Train CPU workers; writes id_embeddings.pt and pretrain_metrics.json into `out_dir`
    and returns the metrics. ValueError when the window is invalid or holds too few pairs to train."""
    opts = opts or PretrainOptions()
    if not window_days > 0:
        raise ValueError(f"window_days must be positive, got {window_days}")
    ds, out_dir = Dataset(dataset_dir), Path(out_dir)
    window_end_ms = int(window_end_ms)
    window_start_ms = window_end_ms - int(round(window_days * DAY_MS))
    first_ts, _ = ds.manifest()["time_span_ms"]
    if window_end_ms <= first_ts:
        raise ValueError(
            f"the pretraining window ends at {window_end_ms}, at or before the dataset's first event ({first_ts}): "
            "it holds no engagements"
        )
    events = ds.read("events", columns=["user_id", "pin_id", "action", "ts"])
    pairs = positive_pairs(events, window_start_ms, window_end_ms)
    del events
    needed = opts.batch_size * world_size(opts.num_workers)
    if len(pairs) < needed:
        raise ValueError(
            f"the pretraining window [{window_start_ms}, {window_end_ms}) holds {len(pairs)} click/repin pairs; "
            f"training needs at least batch_size * num_workers = {needed} (widen window_days, end the window later "
            "or use a smaller batch)"
        )
    # temporal alignment guard: nothing at or after the window's end may reach the embeddings
    if len(pairs) and int(pairs.ts.max()) >= window_end_ms:
        raise AssertionError("a pair at or after window_end_ms reached pretraining")
    n_users = int(ds.read("users", columns=["user_id"]).user_id.max()) + 1
    n_pins = int(ds.read("pins", columns=["pin_id"]).pin_id.max()) + 1
    users, pins = pairs.user_id.to_numpy(np.int64), pairs.pin_id.to_numpy(np.int64)
    user_counts, pin_counts = np.bincount(users, minlength=n_users), np.bincount(pins, minlength=n_pins)
    arrays = {
        "user_id": users,
        "pin_id": pins,
        "user_log_q": _log_q(users, user_counts),
        "pin_log_q": _log_q(pins, pin_counts),
    }
    # shuffled before sharding: load_shard cuts contiguous blocks, and time order would give each worker one period
    order = np.random.default_rng(opts.seed).permutation(len(users))
    arrays = {k: v[order] for k, v in arrays.items()}
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "pairs.npz", **arrays)

    pp = pin_pairs(pairs, int(opts.pin_pair_minutes * 60_000)) if opts.pin_pair_weight > 0 else pd.DataFrame()
    use_pp = len(pp) >= opts.batch_size  # too few to fill a batch: the pin-pin loss would mostly see repeats
    if use_pp:
        a, b = pp.a.to_numpy(np.int64), pp.b.to_numpy(np.int64)
        pp_counts = np.bincount(np.concatenate([a, b]), minlength=n_pins)
        pp_order = np.random.default_rng(opts.seed + 1).permutation(len(a))
        pp_arrays = {"a": a, "b": b, "a_log_q": _log_q(a, pp_counts), "b_log_q": _log_q(b, pp_counts)}
        np.savez(work / "pin_pairs.npz", **{k: v[pp_order] for k, v in pp_arrays.items()})

    model_cfg = IdPretrainConfig(n_users, n_pins, opts.dim, opts.temperature, opts.init_std)
    config = {
        **asdict(opts),
        "pairs": str(work / "pairs.npz"),
        "pin_pairs": str(work / "pin_pairs.npz") if use_pp else "",
        "model": model_cfg.to_dict(),
    }
    t0 = time.perf_counter()
    metrics, _ = fit_on_ray(train_loop, config, out_dir, name="pretrain_ids", num_workers=opts.num_workers)
    seconds = time.perf_counter() - t0

    state = torch.load(out_dir / "model.pt", map_location="cpu", weights_only=True)
    model = IdPretrainModel.from_config(model_cfg)
    model.load_state_dict(state)
    tables = model.tables()
    emb = {
        "user": tables["user"].float().contiguous(),
        "pin": tables["pin"].float().contiguous(),
        "window_start_ms": window_start_ms,
        "window_end_ms": window_end_ms,
        "dim": opts.dim,
        "user_pairs": torch.from_numpy(user_counts.astype(np.int64)),
        "pin_pairs": torch.from_numpy(pin_counts.astype(np.int64)),
    }
    torch.save(emb, out_dir / EMBEDDINGS_FILE)
    (out_dir / "model.pt").unlink()  # id_embeddings.pt holds the same tables

    samples = int(metrics["worker_samples"]) * world_size(opts.num_workers)  # every worker takes as many steps
    summary = {
        "pairs": int(len(pairs)),
        "pin_pairs": int(len(pp)) if use_pp else 0,
        "users_in_window": int((user_counts > 0).sum()),
        "pins_in_window": int((pin_counts > 0).sum()),
        "n_users": n_users,
        "n_pins": n_pins,
        "dim": opts.dim,
        "epochs": opts.epochs,
        "num_workers": opts.num_workers,
        "window_start_ms": window_start_ms,
        "window_end_ms": window_end_ms,
        "max_pair_ts_ms": int(pairs.ts.max()),
        "final_loss": float(metrics["train_loss"]),
        "final_user_pin_loss": float(metrics["user_pin_loss"]),
        "final_pin_pin_loss": float(metrics["pin_pin_loss"]),
        "loss_history": list(metrics["loss_history"]),
        "uniform_negatives": opts.uniform_negatives,
        "samples": samples,
        "seconds": seconds,  # wall time of the Ray job, start-up included
        "train_seconds": float(metrics["train_seconds"]),  # the training loop itself, on rank 0
        "samples_per_s": samples / max(float(metrics["train_seconds"]), 1e-9),
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def load_id_embeddings(path: Path) -> dict:
    """The dict pretrain_ids wrote (a directory is taken to hold id_embeddings.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / EMBEDDINGS_FILE
    emb = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"user", "pin", "window_start_ms", "window_end_ms", "dim"} - set(emb)
    if missing:
        raise ValueError(f"{path} is not an ID-embedding file: {sorted(missing)} missing")
    return emb


def _relevant(pairs_after: pd.DataFrame) -> tuple[np.ndarray, list[set[int]]]:
    rel = pairs_after.groupby("user_id").pin_id.apply(lambda s: set(s.tolist()))
    return rel.index.to_numpy(np.int64), list(rel)


def id_alignment_recall(emb: dict, pairs_after: pd.DataFrame, k: int = 100) -> float:
    """Recall@k of each user's later engaged pins among all pins ranked by cosine(user, pin), averaged over the
    users of `pairs_after` (columns user_id, pin_id): do the ID embeddings predict engagement after their window?"""
    users, relevant = _relevant(pairs_after)
    if not len(users):
        return float("nan")
    u, p = F.normalize(emb["user"][torch.from_numpy(users)], dim=-1), F.normalize(emb["pin"], dim=-1)
    k = min(k, len(p))
    top = torch.topk(u @ p.T, k, dim=1).indices.numpy()
    return recall_at_k(top, relevant, (k,))[k]


def random_recall(n_pins: int, pairs_after: pd.DataFrame, k: int = 100, seed: int = 0) -> float:
    """The same recall for a random order of the pins (its expectation is k / n_pins)."""
    users, relevant = _relevant(pairs_after)
    rng = np.random.default_rng(seed)
    top = np.stack([rng.choice(n_pins, size=min(k, n_pins), replace=False) for _ in users])
    return recall_at_k(top, relevant, (k,))[k] if len(users) else float("nan")


def popularity_recall(pairs_before: pd.DataFrame, pairs_after: pd.DataFrame, k: int = 100) -> float:
    """The same recall for the pins most engaged with in `pairs_before`, the same list for every user."""
    users, relevant = _relevant(pairs_after)
    popular = pairs_before.pin_id.value_counts().index.to_numpy()[:k]
    return recall_at_k(np.tile(popular, (len(users), 1)), relevant, (k,))[k] if len(users) else float("nan")
