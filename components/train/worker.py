"""What every Ray Train worker does the same way: load its shard, iterate batches, report, checkpoint."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

RAY_WORKERS_ENV = "HOMEFEED_RAY_WORKERS"


def default_workers() -> int:
    """Ray workers for a training or a batch embedding that names none: $HOMEFEED_RAY_WORKERS, else 2. 0 runs the
    work in the calling process, without starting Ray (Ray Train's local mode). The test suite sets 0
    (tests/conftest.py); the tests of the Ray path name their workers."""
    value = os.environ.get(RAY_WORKERS_ENV, "2")
    if not value.isdigit():
        raise ValueError(f"${RAY_WORKERS_ENV} must be a whole number >= 0, got {value!r}")
    return int(value)


@dataclass
class TrainingOptions:
    """What every training job takes; each model's options extend it."""

    epochs: int = 2
    batch_size: int = 512
    lr: float = 1e-3
    num_workers: int = field(default_factory=default_workers)  # Ray Train workers; 0: in this process (local mode)
    seed: int = 0


def world_size(num_workers: int) -> int:
    """How many processes share the examples: the workers, or the one process of local mode (`num_workers` 0)."""
    return max(1, num_workers)


def load_shard(path: str) -> dict[str, np.ndarray]:
    """This worker's rows of the examples file. Every shard has the same length, so all workers take the same
    number of steps: DDP's gradient all-reduce would wait forever for a worker that has finished."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Workers share the machine's cores: each takes its share of threads instead of all of them, which otherwise
    # oversubscribes the CPU (measured: 200k ranking examples took 615 s on 2 cores with default threads).
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    n = len(next(iter(arrays.values()))) // world
    return {k: v[rank * n : (rank + 1) * n] for k, v in arrays.items()}


def batches(arrays: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator) -> Iterator[dict]:
    n = len(next(iter(arrays.values())))
    order = rng.permutation(n)
    for lo in range(0, n - batch_size + 1, batch_size):  # full batches only: equal step counts across workers
        idx = order[lo : lo + batch_size]
        yield {k: torch.from_numpy(v[idx]) for k, v in arrays.items()}


def report_epoch(metrics: dict, model: torch.nn.Module | None = None, config: dict | None = None) -> None:
    """Report metrics; with a model (rank 0, last epoch) also a checkpoint of state_dict + config."""
    import ray.train

    if model is None:
        ray.train.report(metrics)
        return
    # Ray removes the folder once it has uploaded the checkpoint to the run's storage. In local mode nothing is
    # uploaded: the result's checkpoint is this folder, and fit_on_ray removes it after copying it out.
    tmp = tempfile.mkdtemp(prefix="homefeed-checkpoint-")
    core = model.module if hasattr(model, "module") else model
    torch.save(core.state_dict(), Path(tmp) / "model.pt")
    (Path(tmp) / "config.json").write_text(json.dumps(config, indent=2))
    ray.train.report(
        metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), delete_local_checkpoint_after_upload=True
    )
