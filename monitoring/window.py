"""One monitoring window as a table: every impression shown in it, with what the monitoring job watches.

Columns (one row per impression of [start_ms, end_ms)):

    ts, request_id, user_id, pin_id
    repin, click, hide       0/1: the user took the action on the impression (monitoring.engagement)
    segment, group           the user's segment, and "core" / "non-core" (seed 003 reports both)
    interest                 the impressed pin's interest (the interest distribution)
    engaged_action           the engagement's action (hide over repin over click), None when not engaged: the
                             action mix
    seq_len                  the user's realtime sequence length when the request was answered (at most 100)
    emb_pc1..emb_pc4         for engaged impressions, the pin's content embedding on the catalogue's first four
                             principal axes (one fixed basis, so windows compare): embedding drift
    score_click/repin/hide   the ranking model's probabilities (sampled requests only, NaN elsewhere): prediction drift
    top3_click/repin/hide    on a sampled request's impressions that got the action, 1 if the model ranks it in the
                             request's top 3, else 0 (NaN on the rest): the column's mean is HIT@3 (model quality)

The model columns need a ranking model directory; `max_requests` samples whole requests, since HIT@3 ranks within a
request.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from components.data.dataset import Dataset
from monitoring.engagement import engagement_frame

if TYPE_CHECKING:
    from components.features.sequence import ActionLog

EMBEDDING_AXES = 4
HEADS = ("click", "repin", "hide")  # the ranking model's output order
CORE = "core"
_PRIORITY = ("hide", "repin", "click")  # an impression both repinned and hidden counts as hidden: the worse outcome


def window_frame(
    dataset_dir: Path,
    start_ms: int,
    end_ms: int,
    model_dir: Path | None = None,
    max_requests: int | None = 2_000,
    seed: int = 0,
) -> pd.DataFrame:
    """The impressions of [start_ms, end_ms) with the columns above; the model columns only with `model_dir`."""
    from components.train.examples import read_events

    ds = Dataset(dataset_dir)
    # the log read once, and its action index built once: the sequence lengths and the model's examples share them
    events, log = read_events(ds)
    users = ds.read("users", columns=["user_id", "segment"])
    window = events[(events.ts >= start_ms) & (events.ts < end_ms)]
    frame = engagement_frame(window, users)
    if frame.empty:
        raise ValueError(f"no impressions in [{start_ms}, {end_ms}) of {dataset_dir}")
    frame["group"] = np.where(frame["segment"] == CORE, "core", "non-core")
    pins = ds.read("pins", columns=["pin_id", "interest_id", "embedding"]).set_index("pin_id")
    frame["interest"] = frame["pin_id"].map(pins["interest_id"]).astype("int64").astype(str)
    engaged = pd.Series(None, index=frame.index, dtype=object)
    for action in reversed(_PRIORITY):  # later assignments win: hide last
        engaged[frame[action] == 1] = action
    frame["engaged_action"] = engaged
    frame["seq_len"] = _sequence_lengths(events, log, frame)
    frame = frame.join(_embedding_axes(pins["embedding"], frame, engaged.notna()))
    if model_dir is not None:
        model_columns = _model_columns(ds, events, log, frame, start_ms, end_ms, Path(model_dir), max_requests, seed)
        frame = frame.join(model_columns)
    return frame


def _sequence_lengths(events: pd.DataFrame, log: ActionLog, frame: pd.DataFrame) -> np.ndarray:
    """Per impression, the length of the realtime sequence the ranking model saw: the user's actions before the
    request was answered, at most 100 (the one definition: components/features/sequence.py)."""
    from components.train.examples import request_times

    return log.lengths_at(frame["user_id"].to_numpy(), request_times(events, frame))


def _embedding_axes(embedding: pd.Series, frame: pd.DataFrame, engaged: pd.Series) -> pd.DataFrame:
    """The engaged impressions' pin embeddings on the catalogue's principal axes (NaN for the others).
    `embedding`: each pin's content embedding, indexed by pin id."""
    emb = np.stack(embedding.to_numpy()).astype(np.float64)
    centre = emb.mean(axis=0)
    # the right singular vectors of the centred catalogue: its principal axes, the same for every window
    _, _, axes = np.linalg.svd(emb - centre, full_matrices=False)
    row = pd.Series(np.arange(len(embedding)), index=embedding.index)
    out = np.full((len(frame), EMBEDDING_AXES), np.nan)
    idx = np.flatnonzero(engaged.to_numpy())
    vectors = emb[row.loc[frame["pin_id"].to_numpy()[idx]].to_numpy()]
    out[idx] = (vectors - centre) @ axes[:EMBEDDING_AXES].T
    return pd.DataFrame(out, index=frame.index, columns=[f"emb_pc{i + 1}" for i in range(EMBEDDING_AXES)])


def _model_columns(
    ds: Dataset,
    events: pd.DataFrame,
    log: ActionLog,
    frame: pd.DataFrame,
    start_ms: int,
    end_ms: int,
    model_dir: Path,
    max_requests: int | None,
    seed: int,
) -> pd.DataFrame:
    """Scores and top-3 flags of the ranking model on a sample of the window's requests."""
    from components.evaluate.metrics import rank_in_request
    from components.train.examples import Catalog, ranking_examples
    from components.train.ranking import load_pinnability, score, served_score

    requests = frame["request_id"].unique()
    if max_requests is not None and len(requests) > max_requests:
        requests = np.random.default_rng(seed).choice(requests, size=max_requests, replace=False)
    ev = events[events.request_id.isin(requests) | (events.action != "impression")]
    ex = ranking_examples(ev, Catalog.load(ds), log, start_ms, end_ms, max_examples=None, seed=seed)
    model, user_emb = load_pinnability(model_dir)
    probs = score(model, user_emb, ex)
    scored = pd.DataFrame({"request_id": ex["request_id"], "pin_id": ex["pin_id"]})
    served = served_score(probs)
    for j, head in enumerate(HEADS):
        scored[f"score_{head}"] = probs[:, j]
        ranked_by = served if head == "hide" else probs[:, j]  # as the offline evaluation ranks (hide: served order)
        rank = rank_in_request(ex["request_id"], ranked_by)
        scored[f"top3_{head}"] = np.where(ex["labels"][:, j] > 0, (rank <= 3).astype(float), np.nan)
    scored = scored.drop_duplicates(["request_id", "pin_id"])
    merged = frame[["request_id", "pin_id"]].merge(scored, on=["request_id", "pin_id"], how="left")
    return merged.drop(columns=["request_id", "pin_id"]).set_index(frame.index)
