"""The pipeline's plain step functions: the time split, the data step's sources and the evaluation's flat metrics."""

from __future__ import annotations

import pytest

from components.data.dataset import Dataset
from components.data.world.config import DAY_MS
from components.evaluate.result import flat_metrics
from pipelines import steps

pytestmark = pytest.mark.integration


def test_time_split_holds_out_the_last_days(tiny_world):
    ts = Dataset(tiny_world).read("events", columns=["ts"])["ts"]
    split = steps.time_split(tiny_world, holdout_days=1, ranking_days=3)
    assert split.end_ms == ts.max() + 1
    assert split.train_end_ms == split.end_ms - DAY_MS
    assert split.ranking_start_ms == split.train_end_ms - 3 * DAY_MS
    assert (ts >= split.train_end_ms).sum() > 0 and (ts < split.ranking_start_ms).sum() > 0


def test_time_split_refuses_a_holdout_covering_everything(tiny_world):
    with pytest.raises(ValueError, match="covers the whole dataset"):
        steps.time_split(tiny_world, holdout_days=365)
    with pytest.raises(ValueError, match="must be positive"):
        steps.time_split(tiny_world, holdout_days=0)


def test_ranking_window_is_clipped_to_the_data(tiny_world):
    split = steps.time_split(tiny_world, holdout_days=1, ranking_days=1000)
    assert split.ranking_start_ms == Dataset(tiny_world).read("events", columns=["ts"])["ts"].min()


def test_prepare_data_simulates_a_world_by_preset(tmp_path):
    manifest = steps.prepare_data("world:tiny", tmp_path / "d", seed=1)
    assert manifest["source"] == "world" and manifest["rows"]["users"] == 300 and manifest["config"]["seed"] == 1


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ("kaggle:x", ValueError, "source must be"),
        ("world:huge", ValueError, "unknown world preset 'huge'"),
        ("movielens:/nonexistent/ml-100k", FileNotFoundError, "does not exist"),
        ("sequences:", FileNotFoundError, r"\(no path\)"),
    ],
)
def test_prepare_data_names_a_bad_source(tmp_path, source, error, match):
    with pytest.raises(error, match=match):
        steps.prepare_data(source, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_flat_metrics_names_each_figure_and_its_baseline():
    evaluation = {
        "retrieval": {"recall": {"10": 0.1, "100": 0.3}, "popularity_recall": {"10": 0.05, "100": 0.2}},
        "ranking": {"impressions": 9, "requests": 3, "hit@3_repin": 0.4, "hit@3_repin_random": 0.3},
    }
    assert flat_metrics(evaluation) == {
        "recall@10": 0.1,
        "recall@100": 0.3,
        "recall@10_popularity": 0.05,
        "recall@100_popularity": 0.2,
        "hit@3_repin": 0.4,
        "hit@3_repin_random": 0.3,
    }
