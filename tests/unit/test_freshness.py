"""The figures and the schedule of `homefeed eval freshness` on hand-made cases."""

import numpy as np
import pytest

from components.evaluate.freshness import DAY_MS, FreshnessOptions, _cuts, lift_share, random_hit_at_k
from components.metrics import hit_at_k

pytestmark = pytest.mark.unit


def test_random_hit_at_3_is_the_expectation_over_random_orders():
    # a request of 2 (a positive always lands in the top 3), one of 6 (3/6) and one of 10 with two positives (3/10)
    rid = np.repeat([0, 1, 2], [2, 6, 10])
    label = np.zeros(len(rid), dtype=bool)
    label[[0, 2, 8, 9]] = True
    assert random_hit_at_k(rid, label) == pytest.approx((1.0 + 0.5 + 0.3 + 0.3) / 4)
    rng = np.random.default_rng(0)
    drawn = np.mean([hit_at_k(rid, rng.random(len(rid)), label) for _ in range(4_000)])
    assert drawn == pytest.approx(random_hit_at_k(rid, label), abs=0.01)
    assert np.isnan(random_hit_at_k(rid, np.zeros(len(rid), dtype=bool)))


def test_lift_share_is_zero_at_random_one_at_the_ground_truth_and_undefined_without_room():
    assert lift_share(0.3, 0.3, 0.8) == pytest.approx(0.0)
    assert lift_share(0.8, 0.3, 0.8) == pytest.approx(1.0)
    assert lift_share(0.55, 0.3, 0.8) == pytest.approx(0.5)
    assert np.isnan(lift_share(0.5, 0.3, 0.3))


def test_the_retraining_schedule_starts_at_the_first_cut_and_keeps_a_day_to_measure():
    start = 1_000 * DAY_MS
    opts = FreshnessOptions(first_cut_day=14, train_days=7, retrain_days=3.5)
    cuts = _cuts(start, start + 28 * DAY_MS, opts)
    assert [(c - start) / DAY_MS for c in cuts] == pytest.approx([14, 17.5, 21, 24.5])
    with pytest.raises(ValueError, match="needs data before the window"):
        _cuts(start, start + 28 * DAY_MS, FreshnessOptions(first_cut_day=5, train_days=7))
    with pytest.raises(ValueError, match="spans 14.0 days"):
        _cuts(start, start + 14 * DAY_MS, FreshnessOptions(first_cut_day=14))
