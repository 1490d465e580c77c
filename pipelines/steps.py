"""The pipeline's steps as plain functions: directories in, a directory out, a JSON-able summary back.

Each function here is what one KFP component runs (pipelines/kfp_components.py wraps them thinly) and what tests
call directly. A step reads only its inputs' directories and writes only its own, so the same code runs under
kfp.local on a laptop and in a pod on Kubeflow, where the directories are artifact mounts.

The artifacts they pass each other are typed where they meet more than one reader: the time split
(components/data/split.py), the evaluation (components/evaluate/result.py), the index bundle
(components/index/bundle.py) and the gate's decision (components/release.py). The drift step is monitoring's
(monitoring/drift.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from components.data.dataset import Dataset
from components.data.split import TimeSplit, time_split
from components.features.online_store import SQLITE
from components.index.bundle import COLLECTION, MILVUS_FILE, IndexBundle
from components.index.corpus import GRANULARITIES, CorpusOptions

__all__ = ["TimeSplit", "time_split"]  # re-exported: the steps' callers build their split here


def prepare_data(source: str, out_dir: Path, seed: int = 0) -> dict:
    """The `data` step. `source` is `world:<preset>` (a simulated world: tiny/small/medium/large, optionally with
    scenarios, e.g. world:small+intent+drift), `movielens:<folder>` (MovieLens-100K) or `sequences:<file>` (a
    'user item' sequence file) or `log:<dir>?catalog=<dataset>` (the offline event log of served traffic over the
    dataset the models were trained on, components/stream/offline_log.py); returns the dataset's manifest."""
    kind, _, arg = source.partition(":")
    out_dir = Path(out_dir)
    if kind == "world":
        from components.data.world.config import preset
        from components.data.world.simulate import simulate_world

        simulate_world(preset(arg or "small", seed=seed), out_dir)
    elif kind == "movielens":
        from components.data.adapters.movielens import ingest_movielens

        ingest_movielens(_existing(arg, source), out_dir)
    elif kind == "sequences":
        from components.data.adapters.sequences import ingest_sequences

        ingest_sequences(_existing(arg, source), out_dir)
    elif kind == "log":
        from components.stream.offline_log import parse_log_source, to_dataset

        log_dir, catalog = parse_log_source(arg)
        to_dataset(_existing(str(log_dir), source), _existing(str(catalog), source), out_dir)
    else:
        raise ValueError(
            f"source must be world:<preset>, movielens:<folder>, sequences:<file> or log:<dir>?catalog=<dataset>; "
            f"got {source!r}"
        )
    return Dataset(out_dir).manifest()


def _existing(path: str, source: str) -> Path:
    if not path or not Path(path).exists():
        raise FileNotFoundError(f"source {source!r}: {path or '(no path)'} does not exist")
    return Path(path)


def build_features(dataset_dir: Path, out_dir: Path, half_life_days: float = 7.0, online_store: str = SQLITE) -> dict:
    """The `features` step: a Feast repository in `out_dir` as of the dataset's end, with the batch views
    materialized and every user's last-100 sequence filled by the stream processor replaying the event log.

    The online store is SQLite inside `out_dir` or a Redis server (`redis://HOST:PORT[/DB]`). The replay's job
    summary, checkpoint and dead letter land in `out_dir/stream/`; every user's online sequence is then checked
    against the offline definition, and any difference fails the step.
    """
    from components.features.store import build_feature_store, default_cutoff
    from components.stream.replay import check_parity, replay_log

    ds = Dataset(dataset_dir)
    cutoff = default_cutoff(ds.read("events", columns=["ts"]))
    store = build_feature_store(
        dataset_dir, out_dir, cutoff, half_life_days=half_life_days, online_store=online_store, push_snapshot=False
    )
    stream = replay_log(store, ds.path("events"), cutoff, Path(out_dir) / "stream")
    users = ds.read("users", columns=["user_id"])["user_id"].to_numpy()
    parity = check_parity(store, users)
    counters = stream["counters"]
    return {
        "users": len(users),
        "pins": len(ds.read("pins", columns=["pin_id"])),
        "online_store": online_store,
        "stream_events": counters["events_in"],
        "stream_applied": counters["applied"],
        "stream_invalid": counters["invalid"],
        "stream_pushes": counters["pushes"],
        "parity_users": parity["users"],
        "parity_mismatches": parity["mismatches"],
    }


def _workers(workers: int | None) -> int:
    """The training steps' Ray Train workers: as given, else the default (components/train/worker.py)."""
    from components.train.worker import default_workers

    return default_workers() if workers is None else workers


def pretrain_ids_step(
    dataset_dir: Path, out_dir: Path, split: TimeSplit | dict, epochs: int, seed: int = 0, workers: int | None = None
) -> dict:
    """The `ID pretraining` step: contrastive user and pin ID embeddings (TorchRec tables, on Ray Train) on the
    clicks and repins of the window that ends where retrieval training ends: temporally aligned, as seed 000 says,
    so the IDs have seen nothing of the holdout.

    `epochs` 0 turns it off: the output then holds only a note, and retrieval starts from random ID tables. Off is
    the pipelines' default because it measured better here: with pretrained IDs (aligned, 0.5 dropout) retrieval's
    holdout hit rate@100 fell from 0.363 to 0.326 on world:small (bench/results/id_pretraining.md).
    """
    from components.train.pretrain_ids import METRICS_FILE, PretrainOptions, pretrain_ids

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if epochs == 0:
        summary = {"pretrained": False, "why": "id_pretrain_epochs is 0"}
        (out_dir / METRICS_FILE).write_text(json.dumps(summary) + "\n")
        return summary
    opts = PretrainOptions(epochs=epochs, seed=seed, num_workers=_workers(workers))
    return {"pretrained": True, **pretrain_ids(dataset_dir, out_dir, TimeSplit.of(split).train_end_ms, opts=opts)}


def train_retrieval_step(
    dataset_dir: Path,
    out_dir: Path,
    split: TimeSplit | dict,
    epochs: int,
    seed: int = 0,
    workers: int | None = None,
    pretrained_dir: Path | None = None,
) -> dict:
    """The `train retrieval` step: the two-tower model on Ray Train (`workers` workers), on everything before the
    holdout, starting from the ID embeddings in `pretrained_dir` when `pretrain_ids_step` wrote some there. `split`
    may be a dict (a call that came as JSON, pipelines/ray_backend.py)."""
    from components.train.pretrain_ids import EMBEDDINGS_FILE
    from components.train.retrieval import RetrievalTraining, train_retrieval

    split = TimeSplit.of(split)
    ids = Path(pretrained_dir) / EMBEDDINGS_FILE if pretrained_dir else None
    opts = RetrievalTraining(
        epochs=epochs,
        seed=seed,
        num_workers=_workers(workers),
        pretrained_ids=str(ids) if ids and ids.exists() else None,
    )
    return train_retrieval(dataset_dir, out_dir, split.train_end_ms, opts)


def train_ranking_step(
    dataset_dir: Path,
    retrieval_dir: Path,
    out_dir: Path,
    split: TimeSplit | dict,
    epochs: int,
    max_examples: int,
    seed: int = 0,
    workers: int | None = None,
    sequence: str = "transact_v11",
) -> dict:
    """The `train ranking` step: Pinnability with the realtime sequence on Ray Train (`workers` workers), on the
    ranking window. `sequence` names the sequence module (models/ranking/sequence.py; "none" is the model without
    the realtime sequence, an experiment's control arm).

    The retrieval user tower's embedding of each user as of the window's start stands in for the pretrained user
    embedding (PinnerSAGE in the seed); it is computed before the window, so no example sees its own outcome."""
    from components.train.examples import Catalog, read_events
    from components.train.ranking import RankingTraining, train_ranking
    from components.train.retrieval import load_two_tower, user_embeddings

    ds, out_dir, split = Dataset(dataset_dir), Path(out_dir), TimeSplit.of(split)
    cat = Catalog.load(ds)
    _, log = read_events(ds)
    users = np.arange(cat.n_users)
    emb = user_embeddings(load_two_tower(retrieval_dir), cat, log, users, np.full(len(users), split.ranking_start_ms))
    emb_path = out_dir / "work" / "user_embeddings.npy"
    emb_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(emb_path, emb)
    from models.ranking.sequence import SequenceConfig

    opts = RankingTraining(
        epochs=epochs,
        max_examples=max_examples,
        seed=seed,
        num_workers=_workers(workers),
        sequence=SequenceConfig(kind=sequence),
    )
    return train_ranking(dataset_dir, out_dir, emb_path, split.ranking_start_ms, split.train_end_ms, opts)


def evaluate(dataset_dir: Path, retrieval_dir: Path, ranking_dir: Path, out_dir: Path, split: TimeSplit) -> dict:
    """The `evaluate` step: recall@K of retrieval and HIT@3 per head of ranking on the holdout, each next to its
    baseline; written to `out_dir/evaluation.json` and returned (components/evaluate/result.py)."""
    from components.evaluate.offline import evaluate_models

    result = evaluate_models(dataset_dir, retrieval_dir, ranking_dir, TimeSplit.of(split))
    result.write(out_dir)
    return result.to_json()


def index_pins(
    dataset_dir: Path,
    retrieval_dir: Path,
    out_dir: Path,
    collection: str = COLLECTION,
    corpus: CorpusOptions | None = None,
    hnsw: dict | None = None,
    index_uri: str = "",
    embed_workers: int | None = None,
    search_ef: int | None = None,
) -> dict:
    """The `corpus + index` step, in two parts:

    1. the serving corpus as of the feature store's cut-off (pins eligible by their time-decayed engagement, or new;
       one per image signature at the training granularity; components/index/corpus.py), written as the next
       version under `out_dir/corpus`;
    2. the pin-tower embedding of each corpus pin (batch inference on Ray, components/index/embed.py; its workers,
       batch size and wall time go to `index.json` as "embedding") published as the next Milvus collection version
       (`{collection}_v<N>`, interest as partition key), and the alias `{collection}_live` moved to it only once
       it is loaded and its HNSW recall against exact search has passed (components/index/versions.py).

    Where the collection goes is `index_uri`: empty (the default) builds a Milvus Lite file `milvus.db` in `out_dir`,
    which the bundle carries; `http(s)://host:port` publishes to that Milvus server (credentials from MILVUS_TOKEN,
    components/index/client.py), checked before any work.

    `out_dir/index.json` tells readers where to search. For the Lite file: the alias (the file is this bundle's own),
    the uri relative to `out_dir`. For a server: the uri, and the version this bundle built, never the alias, which
    is recorded as "alias" for other readers (why: the comment on `bundle` below).
    `hnsw`: the build parameters (`M`, `efConstruction`; Milvus' defaults otherwise), recorded there too.
    `search_ef`: the HNSW search breadth the retrieval predictor will use (None: max(k, 64)), recorded there too.
    `embed_workers`: Ray actors for the embedding (None: embed_pins' default; 0: in this process, without Ray).
    """
    from components.index.client import MilvusServer, parse_index_target
    from components.index.corpus import build_corpus, read_corpus
    from components.index.embed import embed_pins
    from components.index.milvus import HNSW_DEFAULTS
    from components.index.versions import publish_version

    target = parse_index_target(index_uri)  # a bad uri fails here, before any work
    on_server = isinstance(target, MilvusServer)
    out_dir = Path(out_dir)
    # as of the feature store's cut-off (build_corpus' default): a pin created later does not exist yet for serving
    built = build_corpus(dataset_dir, out_dir / "corpus", None, corpus)
    pins, _ = read_corpus(out_dir / "corpus", built["version"])
    ids = pins.pin_id.to_numpy()
    # only the corpus pins, by batch inference of the pin tower on Ray (components/index/embed.py)
    embedding: dict = {}
    emb = embed_pins(retrieval_dir, dataset_dir, ids, workers=embed_workers, stats=embedding)
    out_dir.mkdir(parents=True, exist_ok=True)
    uri = target.uri if on_server else str((out_dir / MILVUS_FILE).resolve())
    signature = pins[GRANULARITIES[built["options"]["granularity"]]].to_numpy()
    published = publish_version(
        uri, collection, ids, emb, pins.interest_id.to_numpy(), signature, pins.created_ts.to_numpy(), hnsw=hnsw
    )
    # A Lite file is this bundle's alone, so its alias names this bundle's version for as long as the bundle lives. A
    # server is shared by every bundle and the alias has just moved, while the deploy step rolls the new query tower
    # out only later: a predictor searching the alias would meet pin embeddings of a model it does not serve, so a
    # bundle on a server names its own version. The version the serving predictor searches until then survives the
    # swap: publish_version keeps the newest two (`keep=2`), this one and the previous. (Only one previous: after a
    # publish whose deploy failed, the next publish drops the version still serving.)
    bundle = IndexBundle(
        uri=target.uri if on_server else MILVUS_FILE,
        collection=published["collection"] if on_server else published["alias"],
        version=published["collection"],
        count=published["count"],
        recall_check={f"recall@{published['recall_k']}": published["recall"]},
        dim=int(emb.shape[1]),
        metric="IP",
        hnsw={**HNSW_DEFAULTS, **(hnsw or {})},
        corpus={"version": built["version"], "as_of_ms": built["as_of_ms"], "counts": built["counts"]},
        embedding={k: embedding[k] for k in ("engine", "workers", "batch_size", "seconds")},
        alias=published["alias"] if on_server else None,
        search_ef=search_ef,
    )
    bundle.write(out_dir)
    return bundle.to_json()
