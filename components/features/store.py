"""The `features` step: a Feast store built from a dataset at a cut-off, and the online reads the models make.

`build_feature_store` computes the feature tables (components/features/tables.py), registers the definitions of
`feature_repo/` in a repository of its own (components/features/repo.py), materializes the batch views into the
SQLite online store and pushes every user's action sequence through the push source, the path the stream processor
takes later. Sequences come from `ActionLog.sequences_at`, the same function training data is cut with, so what a
model reads online is exactly what it was trained on.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore, Field
from feast.data_source import PushSource
from feast.repo_contents import RepoContents
from feast.types import Float32, Int64, from_feast_to_pyarrow_type

from components.data.dataset import Dataset
from components.data.window import window_start
from components.features import repo
from components.features.online_store import SQLITE, OnlineStore, parse_online_store
from components.features.sequence import SEQ_LEN, ActionLog
from components.features.tables import (
    DAY_MS,
    ms_to_datetime,
    pin_features_table,
    sequence_table,
    user_profile_table,
)

USER_PROFILE = "user_profile"
PIN_FEATURES = "pin_features"
USER_ACTION_SEQUENCE = "user_action_sequence"
SEQUENCE_PUSH = "user_action_sequence_push"
RETRIEVAL_SERVICE = "retrieval"

log = logging.getLogger(__name__)


def _preimport_feast_milvus() -> None:
    """Feast imports its Milvus online store module on the first online read, whatever the store type, and pydantic
    warns about a field name in it at that import. Importing it here with that one warning silenced keeps reads
    quiet; a process-wide filter would not do (pytest, for one, resets filters set while a module is imported)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message='Field name "vector_enabled"', category=UserWarning)
        with contextlib.suppress(ImportError):
            import feast.infra.online_stores.milvus_online_store.milvus  # noqa: F401


_preimport_feast_milvus()


def default_cutoff(events: pd.DataFrame) -> int:
    """Just after the last event, so the store holds the whole history."""
    if events.empty:
        raise ValueError("the dataset has no events: pass as_of_ts explicitly")
    return int(events["ts"].max()) + 1


def _write_source(contents: RepoContents, repo_dir: Path, view_name: str, table: pd.DataFrame | pa.Table) -> None:
    """Write `table` where the view's batch source reads, typed as the view declares its features.

    The definitions own both the paths and the types; a column the view declares but the table lacks is an error
    here rather than a failure deep inside materialization. Casting also types an all-null column (say, no pin has
    an embedding) as the declared list type instead of Arrow's null type.
    """
    view = next((v for v in contents.feature_views if v.name == view_name), None)
    if view is None:
        raise KeyError(f"feature_repo defines no feature view named {view_name!r}")
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    declared = {f.name: from_feast_to_pyarrow_type(f.dtype) for f in view.features}
    missing = sorted(set(declared) - set(table.column_names))
    if missing:
        raise ValueError(f"feature view {view_name!r} declares {missing}, which the computed table lacks")
    schema = pa.schema([pa.field(c, declared.get(c, table.schema.field(c).type)) for c in table.column_names])
    path = repo_dir / view.batch_source.path  # relative: Feast resolves it against the repository the same way
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.cast(schema), path)


def build_feature_store(
    dataset_dir: Path,
    repo_dir: Path,
    as_of_ts: int | None = None,
    *,
    half_life_days: float = 7.0,
    max_len: int = SEQ_LEN,
    push_batch: int = 10_000,
    online_store: str | OnlineStore = SQLITE,
    push_snapshot: bool = True,
) -> FeatureStore:
    """Build the feature store of `dataset_dir` as of `as_of_ts` (UTC epoch ms) in `repo_dir` and fill its online store.

    Args:
        dataset_dir: a dataset directory (components/data/dataset.py).
        repo_dir: the store's own directory; created if absent. A second build replaces the first one's registry
            and online store rather than merging with them.
        as_of_ts: the cut-off: only events strictly before it count. Default: the last event's ts + 1.
        half_life_days: half-life of the pins' time-decayed engagement score.
        max_len: sequence length (the realtime sequence keeps the last 100 actions).
        push_batch: users per push to the online store.
        online_store: `sqlite` (in the repository) or `redis://HOST:PORT[/DB]` (components/features/online_store.py).
        push_snapshot: push every user's sequence at the cut-off to the online store. The pipeline's step passes
            False and fills them by replaying the event log through the stream processor instead
            (components/stream/replay.py); the offline snapshot is written either way.
    """
    dataset, repo_dir = Dataset(dataset_dir), Path(repo_dir).resolve()
    events = dataset.read("events")
    cutoff = default_cutoff(events) if as_of_ts is None else int(as_of_ts)

    online = parse_online_store(online_store)
    repo.write_repo(repo_dir, online)
    repo.clear_state(repo_dir)
    store = FeatureStore(repo_path=str(repo_dir))
    contents = repo.parsed_repo(repo_dir, store.project)

    # the counters over the window's own events: a window's context (components/data/window.py) holds old actions
    # without their impressions, so it would skew every rate; the sequences are cut from everything
    counted = events[events["ts"] >= window_start(dataset)]
    profile = user_profile_table(dataset.read("users"), counted, cutoff)
    pins = pin_features_table(dataset.read("pins"), counted, cutoff, half_life_days * DAY_MS)
    sequences = sequence_table(ActionLog(events), profile["user_id"].to_numpy(), cutoff, max_len)
    _write_source(contents, repo_dir, USER_PROFILE, profile)
    _write_source(contents, repo_dir, PIN_FEATURES, pins)
    _write_source(contents, repo_dir, USER_ACTION_SEQUENCE, sequences)

    repo.apply_repo(store, contents)
    if online.type != SQLITE:
        repo.clear_online_rows(store)
    at = ms_to_datetime(cutoff)
    with repo.quiet("feast materialize"):
        # every row is stamped with the cut-off; the window is inclusive at both ends in Feast's file offline store
        store.materialize(at - timedelta(seconds=1), at, feature_views=[USER_PROFILE, PIN_FEATURES])
    if push_snapshot:
        push_sequences(store, sequences, push_batch)
    log.info("feature store at %s: %d users, %d pins as of %s", repo_dir, len(profile), len(pins), at.isoformat())
    return store


def sequence_views(store: FeatureStore) -> list[str]:
    """The feature views the sequence push source feeds: the rule `FeatureStore.push` applies to find them."""
    names = [
        fv.name
        for fv in store.list_feature_views()
        if isinstance(fv.stream_source, PushSource) and fv.stream_source.name == SEQUENCE_PUSH
    ]
    if not names:
        raise KeyError(f"no feature view of {store.repo_path} is fed by the push source {SEQUENCE_PUSH!r}")
    return names


def push_sequences(
    store: FeatureStore, sequences: pa.Table, batch: int = 10_000, views: list[str] | None = None
) -> None:
    """Write sequences (the columns of `sequence_table`) to the online store through the push source, in batches.

    `views` are the push source's views (`sequence_views`); a caller that pushes often resolves them once and
    passes them. `FeatureStore.push` would walk the registry twice on every call to find them again (and once more
    for precomputed services, which these views have none of): about a quarter of a stream push's time.
    """
    views = views or sequence_views(store)
    for start in range(0, sequences.num_rows, batch):
        # column by column, with list cells as Python lists (the form Feast's proto conversion expects); a row-wise
        # to_pylist builds the same frame four times slower, which a stream pushing every second notices
        part = sequences.slice(start, batch)
        df = pd.DataFrame({name: part.column(name).to_pylist() for name in part.column_names})
        with repo.quiet("feast push"):
            for view in views:
                store.write_to_online_store(view, df)


def online_user_features(store: FeatureStore, user_ids: list[int]) -> pd.DataFrame:
    """Profile and sequence of each user (the `retrieval` service), one row per id in the order given.

    Sequences are Python lists, newest first, with actions as codes into contracts.ACTIONS. A user the store does
    not know has nulls (None, <NA>, NaN) in every feature.
    """
    service = store.get_feature_service(RETRIEVAL_SERVICE)
    fields = [f for projection in service.feature_view_projections for f in projection.features]
    rows = [{"user_id": int(u)} for u in user_ids]
    response = store.get_online_features(features=service, entity_rows=rows).to_dict()
    return _frame(response, "user_id", fields)


def online_sequences(store: FeatureStore, user_ids: list[int]) -> dict[int, list[tuple[int, int, int]]]:
    """Each user's online sequence as (ts, pin_id, action code) tuples, newest first; a user without a row (or
    with an empty sequence) is absent."""
    refs = [f"{USER_ACTION_SEQUENCE}:{name}" for name in ("seq_ts", "seq_pin_ids", "seq_actions")]
    rows = [{"user_id": int(u)} for u in user_ids]
    got = store.get_online_features(features=refs, entity_rows=rows).to_dict()
    out = {}
    for user, ts, pins, actions in zip(got["user_id"], got["seq_ts"], got["seq_pin_ids"], got["seq_actions"],
                                       strict=True):  # fmt: skip
        if ts:
            out[int(user)] = [(int(t), int(p), int(a)) for t, p, a in zip(ts, pins, actions, strict=True)]
    return out


def online_pin_features(store: FeatureStore, pin_ids: list[int]) -> pd.DataFrame:
    """The `pin_features` view of each pin, one row per id in the order given; nulls for a pin the store lacks."""
    fields = store.get_feature_view(PIN_FEATURES).features
    rows = [{"pin_id": int(p)} for p in pin_ids]
    refs = [f"{PIN_FEATURES}:{f.name}" for f in fields]
    response = store.get_online_features(features=refs, entity_rows=rows).to_dict()
    return _frame(response, "pin_id", fields)


def _frame(response: dict[str, list], key: str, fields: list[Field]) -> pd.DataFrame:
    """Feast's column dict as a frame in the views' field order, with types that survive missing rows.

    Integers use pandas' nullable Int64: in a float column a missing row would turn 64-bit ids and signatures into
    doubles, which are not exact above 2**53. List features stay Python lists (to_df would make numpy arrays).
    """
    columns: dict[str, object] = {key: np.asarray(response[key], dtype=np.int64)}
    for f in fields:
        values = response[f.name]
        if f.dtype == Int64:
            columns[f.name] = pd.array(values, dtype="Int64")
        elif f.dtype == Float32:
            columns[f.name] = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
        else:
            columns[f.name] = pd.Series(values, dtype=object)
    return pd.DataFrame(columns)
