"""Train the two-tower retrieval model on Ray Train, and use a trained one (load, user and pin embeddings)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from components.data.dataset import Dataset
from components.features.sequence import ActionLog
from components.train.examples import USER_INPUTS, Catalog, read_events, retrieval_examples, user_features
from components.train.ray_runner import fit_on_ray
from components.train.worker import TrainingOptions, batches, load_shard, report_epoch, world_size
from models.retrieval.two_tower import TwoTower, TwoTowerConfig


@dataclass
class RetrievalTraining(TrainingOptions):
    epochs: int = 3
    lr: float = 2e-3
    # The defaults are the best configuration measured, the plain two-tower: on world:medium at 3 epochs no addition
    # of seed 000 raised recall@100 above it (bench/results/retrieval_eval.md, `homefeed eval retrieval`). The
    # pipeline trains with these.
    crossing: str = "none"  # none | masknet | dhen
    conditional: bool = False  # the interest field of conditional retrieval
    condition_prob: float = 0.5  # share of examples trained with their positive's interest as the condition
    random_negatives: int = 0  # uniform random pins per batch, mixed with the in-batch negatives
    capsules: int = 0  # K > 0: multi-embedding user tower (up to K interest capsules)
    id_dropout: float = 0.5
    pretrained_ids: str | None = None  # id_embeddings.pt of components/train/pretrain_ids.py
    freeze_ids: bool = False


def _conditions(interest: torch.Tensor, cfg: TwoTowerConfig, prob: float, gen: torch.Generator) -> torch.Tensor:
    """The positive's interest as the condition for a `prob` share of rows, "no interest" for the rest, so the tower
    learns both conditional and unconditional retrieval."""
    use = torch.rand(len(interest), generator=gen) < prob
    return torch.where(use, interest, torch.full_like(interest, cfg.no_condition))


def _model(config: dict) -> tuple[TwoTower, torch.Tensor]:
    """The two-tower a training run starts from (pretrained IDs loaded when asked), and each pin's interest."""
    content = torch.from_numpy(np.load(config["content"]))
    two_tower = TwoTower(TwoTowerConfig(**config["model"]), content)
    if config["pretrained_ids"]:
        ids = torch.load(config["pretrained_ids"], map_location="cpu", weights_only=True)
        two_tower.load_pretrained_ids(ids["user"], ids["pin"], freeze=config["freeze_ids"])
    return two_tower, torch.from_numpy(np.load(config["pin_interest"]))


def _fit(model, core: TwoTower, pin_interest, shard: dict, config: dict, rank: int, on_epoch) -> None:
    """The training epochs: `model` is `core` wrapped in DDP with several workers, `shard` this worker's rows (every
    row in local mode); `on_epoch(epoch, metrics)` after each."""
    cfg = core.cfg
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config["lr"])
    rng = np.random.default_rng(config["seed"] + rank)
    gen = torch.Generator().manual_seed(config["seed"] + rank)
    for epoch in range(config["epochs"]):
        total, steps, t0 = 0.0, 0, time.perf_counter()
        for b in batches(shard, config["batch_size"], rng):
            cond = _conditions(b["interest"], cfg, config["condition_prob"], gen) if cfg.conditional else None
            u, p = model(b["user_id"], b["segment"], b["declared"], b["seq_pin_ids"], b["pin_id"], b["interest"], cond)
            neg_vec = neg_ids = None
            if config["random_negatives"]:
                neg_ids = torch.randint(0, cfg.n_pins, (config["random_negatives"],), generator=gen)
                neg_vec = core.pin(neg_ids, pin_interest[neg_ids])
            loss = core.loss(u, p, b["pin_id"], b["log_q"], neg_vec, neg_ids)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        seconds = time.perf_counter() - t0
        on_epoch(
            epoch,
            {
                "epoch": epoch,
                "train_loss": total / max(steps, 1),
                "samples_per_s": steps * config["batch_size"] / max(seconds, 1e-9),  # this worker's
            },
        )


def train_loop(config: dict) -> None:
    """One Ray Train worker."""
    import ray.train
    import ray.train.torch

    torch.manual_seed(config["seed"])
    shard = load_shard(config["examples"])
    two_tower, pin_interest = _model(config)
    model = ray.train.torch.prepare_model(two_tower)
    core = model.module if hasattr(model, "module") else model
    rank = ray.train.get_context().get_world_rank()

    def report(epoch: int, metrics: dict) -> None:
        last = epoch == config["epochs"] - 1 and rank == 0
        report_epoch(metrics, model if last else None, config["model"])

    _fit(model, core, pin_interest, shard, config, rank, report)


@dataclass
class TrainingData:
    """What a retrieval training reads: positive pairs with the user as of each (`retrieval_examples`' keys), and the
    catalogue lookups the towers need. A dataset gives one (`from_dataset`); other sources (the sequence files of
    `homefeed eval seqrec`) build their own."""

    examples: dict[str, np.ndarray]
    content: np.ndarray  # [P, c] pin content embeddings
    pin_interest: np.ndarray  # [P]
    n_users: int
    n_interests: int

    @classmethod
    def from_dataset(cls, dataset: Path, train_end_ms: int) -> TrainingData:
        """Every positive before `train_end_ms` (from the window's start, for a window: components/data/window.py)."""
        from components.data.window import window_start

        ds = Dataset(dataset)
        cat = Catalog.load(ds)
        ev, log = read_events(ds)
        examples = retrieval_examples(ev, cat, log, start_ms=window_start(ds), end_ms=train_end_ms)
        return cls(examples, cat.content, cat.pin_interest, cat.n_users, cat.n_interests)


def _prepare(data: TrainingData, out_dir: Path, opts: RetrievalTraining) -> dict:
    """Write what a training run reads into `out_dir/work`; returns the run's config."""
    n = len(data.examples["pin_id"])
    if n < opts.batch_size * world_size(opts.num_workers):
        raise ValueError(f"only {n} positives to train on: fewer than one batch per worker")
    work = Path(out_dir) / "work"
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "examples.npz", **data.examples)
    np.save(work / "content.npy", data.content)
    np.save(work / "pin_interest.npy", data.pin_interest)
    model_cfg = TwoTowerConfig(
        n_users=data.n_users,
        n_pins=len(data.pin_interest),
        n_interests=data.n_interests,
        crossing=opts.crossing,
        conditional=opts.conditional,
        id_dropout=opts.id_dropout,
        capsules=opts.capsules,
    )
    return {
        **asdict(opts),
        "examples": str(work / "examples.npz"),
        "content": str(work / "content.npy"),
        "pin_interest": str(work / "pin_interest.npy"),
        "model": model_cfg.to_dict(),
    }


def fit_retrieval(data: TrainingData, out_dir: Path, opts: RetrievalTraining, on_ray: bool = True) -> dict:
    """Train on `data`: on Ray Train with `opts.num_workers` workers, or (`on_ray=False`, or `opts.num_workers` 0)
    in this process with all cores' threads (Ray Train's local mode: the same loop, the baseline Ray Train is
    measured against). The model, its config and metrics land in `out_dir`; returns the metrics."""
    out_dir = Path(out_dir)
    if not on_ray:
        opts = replace(opts, num_workers=0)
    config = _prepare(data, out_dir, opts)
    metrics, _ = fit_on_ray(train_loop, config, out_dir, name="retrieval", num_workers=opts.num_workers)
    summary = {"train_examples": len(data.examples["pin_id"]), **metrics}
    (out_dir / "train_metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def train_retrieval(dataset: Path, out_dir: Path, train_end_ms: int, opts: RetrievalTraining) -> dict:
    """Examples from everything before `train_end_ms` of a dataset, trained on Ray Train."""
    summary = fit_retrieval(TrainingData.from_dataset(dataset, train_end_ms), out_dir, opts)
    return {**summary, "train_end_ms": train_end_ms}


def train_retrieval_local(dataset: Path, out_dir: Path, train_end_ms: int, opts: RetrievalTraining) -> dict:
    """As `train_retrieval`, in this process without Ray."""
    summary = fit_retrieval(TrainingData.from_dataset(dataset, train_end_ms), out_dir, opts, on_ray=False)
    return {**summary, "train_end_ms": train_end_ms}


def load_two_tower(model_dir: Path) -> TwoTower:
    model_dir = Path(model_dir)
    cfg = TwoTowerConfig(**json.loads((model_dir / "config.json").read_text()))
    state = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)
    content = torch.zeros(state["user.content.table"].shape[0] - 1, state["user.content.table"].shape[1])
    cfg.hidden = tuple(cfg.hidden)  # JSON made it a list
    model = TwoTower(cfg, content)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def pin_embeddings(model: TwoTower, cat: Catalog, batch: int = 65_536) -> np.ndarray:
    """[P, out_dim] for every pin id (the offline half of two-tower serving)."""
    out = []
    for lo in range(0, cat.n_pins, batch):
        ids = torch.arange(lo, min(lo + batch, cat.n_pins))
        out.append(model.pin(ids, torch.from_numpy(cat.pin_interest[ids.numpy()])).numpy())
    return np.concatenate(out)


@torch.no_grad()
def user_embeddings(model: TwoTower, cat: Catalog, log: ActionLog, users: np.ndarray, at_ts: np.ndarray) -> np.ndarray:
    f = user_features(cat, log, users, at_ts)
    return model.user(*(torch.from_numpy(f[k]) for k in USER_INPUTS)).numpy()
