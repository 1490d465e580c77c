"""Pin embeddings by batch inference of the trained pin tower on Ray (Ray Data `map_batches` over an actor pool).

The driver builds a dataset of (row, pin_id) pairs, one block per batch, so the batches spread over the actors;
each actor loads the pin tower and the pins' interests once, from the retrieval model directory and the dataset
directory it is given as paths, and embeds every batch it receives. Paths rather than a model object keep the
object store out of it and let the same call run on a remote cluster (`address`), whose workers read the same
storage. Blocks finish in no fixed order, so every output row carries its position in `pin_ids` and the driver
scatters the vectors back by it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.dataset import Dataset

DEFAULT_BATCH_SIZE = 4096
# The default worker count grows with the pins, one actor per PINS_PER_WORKER, up to DEFAULT_MAX_WORKERS and the
# cluster's CPUs. Measured on the 2-core dev box: an actor's start-up (importing torch and torchrec, loading the
# model) takes about 5 s, while the default pin tower embeds some 70k pins a second on one core, so a second actor
# pays for itself only on a few hundred thousand pins; the demo's ~9k corpus pins went faster on one actor than two.
PINS_PER_WORKER = 200_000
DEFAULT_MAX_WORKERS = 4
_UNKNOWN_SHOWN = 10  # unknown ids named in the error; the rest are counted


def _pin_interest(dataset_dir: Path, n_pins: int) -> np.ndarray:
    """[n_pins] interest id per pin id, read from the pins table alone: an actor needs nothing else of the
    catalogue (pins newer than the model cannot be asked for: embed_pins refuses them)."""
    from components.train.examples import pin_interests

    return pin_interests(Dataset(dataset_dir).read("pins", columns=["pin_id", "interest_id"]), n_pins)


class _PinTower:
    """One Ray Data actor: the model is loaded once in the constructor, then called once per batch."""

    def __init__(self, retrieval_dir: str, dataset_dir: str, actor: bool = True) -> None:
        import torch

        from components.train.retrieval import load_two_tower

        if actor:  # Ray sets OMP_NUM_THREADS to the actor's CPUs; keep torch's intra-op pool to it as well
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.model = load_two_tower(Path(retrieval_dir))
        self.interest = _pin_interest(Path(dataset_dir), self.model.cfg.n_pins)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ids = batch["pin_id"].astype(np.int64)
        with torch.inference_mode():
            emb = self.model.pin(torch.from_numpy(ids), torch.from_numpy(self.interest[ids])).numpy()
        return {"row": batch["row"], "embedding": emb.astype(np.float32, copy=False)}


def _model_config(retrieval_dir: Path) -> dict:
    """The model's config.json, read without loading torch: what the checks before any Ray work need."""
    path = Path(retrieval_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{retrieval_dir} is not a retrieval model directory: config.json is missing")
    return json.loads(path.read_text())


def _check_known(dataset_dir: Path, pin_ids: np.ndarray, n_pins: int) -> None:
    """A ValueError naming the pin ids the dataset has no row for, or that the model has no embedding for."""
    known = Dataset(dataset_dir).read("pins", columns=["pin_id"]).pin_id.to_numpy()
    unknown = np.setdiff1d(pin_ids, known)
    if len(unknown):
        shown = ", ".join(str(int(i)) for i in unknown[:_UNKNOWN_SHOWN])
        more = f" and {len(unknown) - _UNKNOWN_SHOWN} more" if len(unknown) > _UNKNOWN_SHOWN else ""
        raise ValueError(f"{len(unknown)} pin ids are not in {dataset_dir}: {shown}{more}")
    beyond = pin_ids[pin_ids >= n_pins]
    if len(beyond):
        shown = ", ".join(str(int(i)) for i in np.unique(beyond)[:_UNKNOWN_SHOWN])
        raise ValueError(f"pin ids {shown} are newer than the model, which knows pin ids below {n_pins}")


def embed_pins(
    retrieval_dir: Path,
    dataset_dir: Path,
    pin_ids,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    address: str | None = None,
    stats: dict | None = None,
) -> np.ndarray:
    """[len(pin_ids), out_dim] float32 pin-tower embeddings, row i for `pin_ids[i]`, computed on Ray by `workers`
    actors (default: one per PINS_PER_WORKER pins, at most DEFAULT_MAX_WORKERS; never more than the batches or the
    cluster's CPUs; none where $HOMEFEED_RAY_WORKERS is 0) in batches of `batch_size`; `workers=0` embeds the same
    batches in this process, without Ray.

    Ray is started on this machine, or attached to the cluster at `address`, once per process (`ensure_ray`).
    Unknown pin ids raise a ValueError before any Ray work. `stats`, when given, is filled with what the run used
    and its wall time: {"engine", "workers", "batch_size", "pins", "seconds"}.
    """
    from components.train.ray_runner import ensure_ray
    from components.train.worker import default_workers

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0 (0: in this process), got {workers}")
    t0 = time.perf_counter()
    pin_ids = np.asarray(pin_ids, dtype=np.int64).reshape(-1)
    cfg = _model_config(retrieval_dir)
    out = np.zeros((len(pin_ids), int(cfg["out_dim"])), dtype=np.float32)
    _check_known(dataset_dir, pin_ids, int(cfg["n_pins"]))
    if workers is None and default_workers() == 0:  # $HOMEFEED_RAY_WORKERS=0: no Ray unless asked for by count
        workers = 0
    if workers == 0 and len(pin_ids):
        tower = _PinTower(str(retrieval_dir), str(dataset_dir), actor=False)
        for lo in range(0, len(pin_ids), batch_size):
            out[lo : lo + batch_size] = tower({"row": None, "pin_id": pin_ids[lo : lo + batch_size]})["embedding"]
    if workers == 0 or len(pin_ids) == 0:
        if stats is not None:
            engine = "local" if workers == 0 else "ray"
            stats.update(
                engine=engine, workers=0, batch_size=batch_size, pins=len(pin_ids), seconds=time.perf_counter() - t0
            )
        return out

    import ray
    import ray.data

    ensure_ray(address=address)
    n_batches = -(-len(pin_ids) // batch_size)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    if workers is None:
        workers = min(-(-len(pin_ids) // PINS_PER_WORKER), DEFAULT_MAX_WORKERS)
    # An actor with no batch to take would only cost its start-up; one more than the CPUs would stay pending, and a
    # fixed-size pool waits for it before it starts (measured: 3 workers on 2 CPUs took 3x as long as 2).
    workers = max(1, min(workers, n_batches, cpus))
    rows = np.arange(len(pin_ids), dtype=np.int64)
    # One block per batch: Ray Data hands whole blocks to actors, so a single block would keep one actor busy.
    blocks = [
        pd.DataFrame({"row": rows[lo : lo + batch_size], "pin_id": pin_ids[lo : lo + batch_size]})
        for lo in range(0, len(pin_ids), batch_size)
    ]
    embedded = ray.data.from_pandas(blocks).map_batches(
        _PinTower,
        fn_constructor_kwargs={
            "retrieval_dir": str(Path(retrieval_dir).resolve()),
            "dataset_dir": str(Path(dataset_dir).resolve()),
        },
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1,
        udf_modifying_row_count=False,
    )
    seen = 0
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        out[batch["row"]] = batch["embedding"]
        seen += len(batch["row"])
    if seen != len(pin_ids):  # every row is scattered by its position: a lost or repeated batch would go unseen
        raise RuntimeError(f"Ray returned {seen} embeddings for {len(pin_ids)} pin ids")
    if stats is not None:
        stats.update(
            engine="ray", workers=workers, batch_size=batch_size, pins=len(pin_ids), seconds=time.perf_counter() - t0
        )
    return out
