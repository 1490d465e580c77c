"""The serving corpus: decayed engagement scores, signature dedup, eligibility, versions, and the granularity skew."""

import numpy as np
import pandas as pd
import pytest

from components.data.dataset import Dataset
from components.index.corpus import (
    DAY_MS,
    CorpusOptions,
    build_corpus,
    decayed_scores,
    dedup,
    granularity_skew,
    read_corpus,
    select,
)

pytestmark = pytest.mark.unit
NOW = 100 * DAY_MS


def test_scores_halve_every_half_life_weigh_actions_and_ignore_the_future():
    events = pd.DataFrame(
        {
            "pin_id": [0, 1, 2, 2, 3, 0],
            "action": ["repin", "click", "hide", "impression", "repin", "repin"],
            "ts": [NOW - 7 * DAY_MS, NOW - 1, NOW - 1, NOW - 1, NOW, NOW + DAY_MS],  # pin 3 and the last: not before
        }
    )
    s = decayed_scores(events, 5, NOW, half_life_days=7.0)
    np.testing.assert_allclose(s, [0.5, 0.5, -1.0, 0.0, 0.0], atol=1e-6)


def test_dedup_keeps_the_best_scored_pin_per_signature_then_the_newest_then_the_lowest_id():
    sig = np.array([7, 7, 7, 9, 9, 4])
    score = np.array([1.0, 3.0, 3.0, 2.0, 2.0, 0.1])
    created = np.array([5, 1, 2, 8, 8, 0])
    ids = np.array([10, 11, 12, 14, 13, 15])
    assert dedup(sig, score, created, ids).tolist() == [False, False, True, False, True, True]


def _pins(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pin_id": np.arange(n),
            "interest_id": np.arange(n) % 2,
            "created_ts": [0, 0, 0, NOW - DAY_MS, NOW + 1, 0],  # pin 3 is new, pin 4 does not exist yet
            "image_signature_fine": np.arange(n),
            "image_signature_coarse": [0, 0, 1, 2, 3, 4],
        }
    )


def test_select_takes_engaged_and_new_pins_and_caps_by_score():
    scores = np.array([2.0, 1.0, -0.5, 0.0, 5.0, 0.2])
    table, counts = select(_pins(), scores, NOW, CorpusOptions())
    assert table.pin_id.tolist() == [0, 1, 5, 3]  # by score; pin 2 (net hides) out, pin 3 in as new, pin 4 unborn
    assert counts == {"existing": 5, "eligible": 4, "after_dedup": 4, "served": 4}
    coarse, counts = select(_pins(), scores, NOW, CorpusOptions(granularity="coarse", max_pins=2))
    assert coarse.pin_id.tolist() == [0, 5]  # pins 0 and 1 share a coarse signature: the better one stays
    assert counts["after_dedup"] == 3 and counts["served"] == 2


def test_bad_options_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="half_life_days"):
        CorpusOptions(half_life_days=0)
    with pytest.raises(ValueError, match="granularity"):
        CorpusOptions(granularity="pixel")
    with pytest.raises(ValueError, match="max_pins"):
        CorpusOptions(max_pins=0)


def test_each_build_is_a_new_version_and_old_ones_stay_readable(tiny_world, tmp_path):
    first = build_corpus(tiny_world, tmp_path / "corpus")
    later = build_corpus(tiny_world, tmp_path / "corpus", opts=CorpusOptions(half_life_days=1.0, max_pins=100))
    assert (first["version"], later["version"]) == (1, 2)
    table, manifest = read_corpus(tmp_path / "corpus")
    assert manifest["version"] == 2 and len(table) == 100
    old, _ = read_corpus(tmp_path / "corpus", version=1)
    assert len(old) == first["counts"]["served"] > 100
    assert old.pin_id.is_unique and old.image_signature_fine.is_unique
    with pytest.raises(FileNotFoundError, match="versions there: \\[1, 2\\]"):
        read_corpus(tmp_path / "corpus", version=3)
    with pytest.raises(ValueError, match="no pin is eligible"):
        build_corpus(tiny_world, tmp_path / "corpus", as_of_ms=0)
    assert [p.name for p in sorted((tmp_path / "corpus").iterdir())] == ["v1", "v2"]  # nothing half-written


def test_dedup_coarser_than_training_drops_items_and_finer_serves_duplicates(tiny_world):
    """The seed's training-serving skew on the tiny world (20% of pins are duplicates of another)."""
    ds = Dataset(tiny_world)
    pins = ds.read("pins")
    events = ds.read("events", columns=["pin_id", "action", "ts"])
    now = int(events.ts.max()) + 1
    scores = decayed_scores(events, len(pins), now, 7.0)
    engaged = np.flatnonzero(scores > 0)  # items training saw engaged and the corpus may serve
    at = {g: select(pins, scores, now, CorpusOptions(granularity=g))[0].pin_id.to_numpy() for g in ("fine", "coarse")}
    aligned = granularity_skew(pins, engaged, at["fine"], train="fine")
    coarser = granularity_skew(pins, engaged, at["coarse"], train="fine")
    finer = granularity_skew(pins, engaged, at["fine"], train="coarse")  # training at coarse, serving at fine
    assert aligned == pytest.approx({"coverage": 1.0, "duplicate_share": 0.0})  # shares of counts
    assert coarser["coverage"] < 0.97 and coarser["duplicate_share"] == pytest.approx(0.0)
    assert finer["duplicate_share"] > 0.02
