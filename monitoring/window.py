"""One monitoring window as a table: every impression shown in it, with what the monitoring job watches.

Columns (one row per impression of [start_ms, end_ms), or of a sample of its requests):

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
    sim_click/repin/hide     only on a simulated world (its ground_truth.npz): on the impressions the model ranks
                             in its request's top 3 (served order), the probability that the world's user takes the
                             action, at the request's time (NaN on the rest). The column's mean is the engagement
                             per impression the model's feed gets in the simulated world: logged engagement comes
                             from the world's own logging policy, so only this figure answers to the model
    sim_repin_slate,         the same probabilities over every scored impression: what a random order's top 3 gets
    sim_hide_slate           (the floor the model's figure is measured from)

A `Source` reads the dataset once for any number of windows (a job compares a window with its reference). Samples
are of whole requests: HIT@3 ranks within a request, and the impressions of one request are not independent, so a
request sample is the unit the rates' uncertainty is counted in. `max_impressions` bounds the rows (what a day of a
large feed needs, bench/monitoring_job.py); `max_requests` bounds the requests the model scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.dataset import Dataset
from components.features.sequence import ActionLog
from monitoring.engagement import engagement_frame

EMBEDDING_AXES = 4
HEADS = ("click", "repin", "hide")  # the ranking model's output order
CORE = "core"
_PRIORITY = ("hide", "repin", "click")  # an impression both repinned and hidden counts as hidden: the worse outcome
# A request's impressions are written over a few seconds; a request answered just before a window's start still
# has its first impression within this margin, so its request time is exact (components.train.examples).
_REQUEST_MARGIN_MS = 3_600_000


@dataclass
class Source:
    """A dataset as the monitoring job reads it, once: the event log and its action index, each user's segment, and
    each pin's interest and content embedding on the catalogue's principal axes (indexed by pin id)."""

    dataset_dir: Path
    events: pd.DataFrame
    log: ActionLog
    users: pd.DataFrame
    pin_interest: np.ndarray  # [P] by pin id (-1: unknown pin)
    pin_axes: np.ndarray  # [P, EMBEDDING_AXES] by pin id

    @classmethod
    def load(cls, dataset_dir: Path) -> Source:
        from components.train.examples import read_events

        ds = Dataset(dataset_dir)
        events, log = read_events(ds)
        pins = ds.read("pins", columns=["pin_id", "interest_id", "embedding"])
        ids = pins["pin_id"].to_numpy()
        interest = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
        interest[ids] = pins["interest_id"].to_numpy()
        emb = np.stack(pins["embedding"].to_numpy()).astype(np.float64)
        centre = emb.mean(axis=0)
        # the right singular vectors of the centred catalogue: its principal axes, the same for every window
        _, _, basis = np.linalg.svd(emb - centre, full_matrices=False)
        axes = np.zeros((len(interest), EMBEDDING_AXES))
        axes[ids] = (emb - centre) @ basis[:EMBEDDING_AXES].T
        users = ds.read("users", columns=["user_id", "segment"])
        return cls(Path(dataset_dir), events, log, users, interest, axes)

    @cached_property
    def truth(self):
        """The simulated world's ground truth (components.data.world.truth), None for real data."""
        from components.data.world.truth import GroundTruth

        path = self.dataset_dir / "ground_truth.npz"
        return GroundTruth.load(path) if path.exists() else None

    @cached_property
    def catalog(self):
        """The arrays the ranking model reads (components.train.examples.Catalog), loaded when a model is scored."""
        from components.train.examples import Catalog

        return Catalog.load(Dataset(self.dataset_dir))

    def end_ms(self) -> int:
        """Just after the last event: where the latest window ends."""
        if self.events.empty:
            raise ValueError(f"{self.dataset_dir} has no events")
        return int(self.events["ts"].max()) + 1


def window_frame(
    source: Source | Path,
    start_ms: int,
    end_ms: int,
    model_dir: Path | None = None,
    max_requests: int | None = 2_000,
    seed: int = 0,
    max_impressions: int | None = None,
) -> pd.DataFrame:
    """The impressions of [start_ms, end_ms) with the columns above (a sample of whole requests when there are more
    than `max_impressions`); the model columns only with `model_dir`."""
    if not isinstance(source, Source):
        source = Source.load(source)
    events = source.events
    window = events[(events.ts >= start_ms - _REQUEST_MARGIN_MS) & (events.ts < end_ms)]
    shown = window[(window.action == "impression") & (window.ts >= start_ms)]
    if shown.empty:
        raise ValueError(f"no impressions in [{start_ms}, {end_ms}) of {source.dataset_dir}")
    requests = _sample_requests(shown, max_impressions, seed)
    if requests is not None:
        window = window[window.request_id.isin(requests)]
    first_shown = window[window.action == "impression"].groupby("request_id")["ts"].min()
    frame = engagement_frame(window[window.ts >= start_ms], source.users)
    frame["request_ts"] = first_shown.reindex(frame["request_id"]).to_numpy()
    frame["group"] = np.where(frame["segment"] == CORE, "core", "non-core")
    pins = frame["pin_id"].to_numpy()
    frame["interest"] = source.pin_interest[pins].astype(str)
    engaged = pd.Series(None, index=frame.index, dtype=object)
    for action in reversed(_PRIORITY):  # later assignments win: hide last
        engaged[frame[action].to_numpy() == 1] = action
    frame["engaged_action"] = engaged
    # the served definition of the sequence (components/features/sequence.py): actions before the request time
    frame["seq_len"] = source.log.lengths_at(frame["user_id"].to_numpy(), frame["request_ts"].to_numpy())
    axes = np.where(engaged.notna().to_numpy()[:, None], source.pin_axes[pins], np.nan)
    for i in range(EMBEDDING_AXES):
        frame[f"emb_pc{i + 1}"] = axes[:, i]
    if model_dir is not None:
        frame = frame.join(_model_columns(source, frame, start_ms, end_ms, Path(model_dir), max_requests, seed))
    frame.attrs["impressions"] = len(shown)  # before sampling
    return frame


def _sample_requests(shown: pd.DataFrame, max_impressions: int | None, seed: int) -> np.ndarray | None:
    """The request ids to keep so that about `max_impressions` impressions remain (None: keep all)."""
    if max_impressions is None or len(shown) <= max_impressions:
        return None
    requests = shown["request_id"].unique()
    keep = max(1, round(len(requests) * max_impressions / len(shown)))
    return np.random.default_rng(seed).choice(requests, size=keep, replace=False)


def _model_columns(
    source: Source,
    frame: pd.DataFrame,
    start_ms: int,
    end_ms: int,
    model_dir: Path,
    max_requests: int | None,
    seed: int,
) -> pd.DataFrame:
    """Scores and top-3 flags of the ranking model on a sample of the window's requests."""
    from components.metrics import rank_in_request
    from components.train.examples import ranking_examples
    from components.train.ranking import load_pinnability, score, served_score

    requests = frame["request_id"].unique()
    if max_requests is not None and len(requests) > max_requests:
        requests = np.random.default_rng(seed).choice(requests, size=max_requests, replace=False)
    events = source.events
    ev = events[events.request_id.isin(requests) | (events.action != "impression")]
    ex = ranking_examples(ev, source.catalog, source.log, start_ms, end_ms, max_examples=None, seed=seed)
    model, user_emb = load_pinnability(model_dir)
    probs = score(model, user_emb, ex)
    scored = pd.DataFrame({"request_id": ex["request_id"], "pin_id": ex["pin_id"]})
    served_rank = rank_in_request(ex["request_id"], served_score(probs))  # the order the feed is served in
    for j, head in enumerate(HEADS):
        scored[f"score_{head}"] = probs[:, j]
        # as the offline evaluation ranks: each head by its own score, hide by the served order
        rank = served_rank if head == "hide" else rank_in_request(ex["request_id"], probs[:, j])
        scored[f"top3_{head}"] = np.where(ex["labels"][:, j] > 0, (rank <= 3).astype(float), np.nan)
    if source.truth is not None:
        at = frame.drop_duplicates("request_id").set_index("request_id")["request_ts"]
        ts = at.reindex(ex["request_id"]).to_numpy().astype(np.int64)
        truth = source.truth.action_probs(ex["user_id"], ex["pin_id"], ts)  # none, click, repin, hide
        top3 = served_rank <= 3  # what the feed shows first
        for j, head in enumerate(HEADS):
            scored[f"sim_{head}"] = np.where(top3, truth[:, j + 1], np.nan)
        scored["sim_repin_slate"], scored["sim_hide_slate"] = truth[:, 2], truth[:, 3]
    scored = scored.drop_duplicates(["request_id", "pin_id"])
    merged = frame[["request_id", "pin_id"]].merge(scored, on=["request_id", "pin_id"], how="left")
    return merged.drop(columns=["request_id", "pin_id"]).set_index(frame.index)
