import numpy as np
import pytest

from components.metrics import hit_at_k, ratio_ci, recall_at_k, recall_per_user

pytestmark = pytest.mark.unit


def test_hit_at_3_counts_positives_ranked_in_their_requests_top_3():
    # request 1: five pins, repins on the best- and the worst-scored; request 2: one repin ranked 2nd
    req = np.array([1, 1, 1, 1, 1, 2, 2, 2])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.3, 0.5, 0.2])
    label = np.array([1, 0, 0, 0, 1, 1, 0, 0])
    assert hit_at_k(req, score, label, k=3) == pytest.approx(2 / 3)
    assert np.isnan(hit_at_k(req, score, np.zeros(8)))


def test_recall_at_k_averages_over_users_with_relevant_items():
    ranked = np.array([[5, 6, 7], [1, 2, 3], [9, 8, 7]])
    relevant = [{5, 9}, {3}, set()]
    assert recall_at_k(ranked, relevant, ks=(1, 3)) == {1: pytest.approx(0.25), 3: pytest.approx(0.75)}


def test_recall_per_user_skips_users_with_nothing_relevant():
    ranked = np.array([[1, 2], [3, 4], [5, 6]])
    per_user = recall_per_user(ranked, [{1, 9}, set(), {6}], k=2)
    assert per_user.tolist() == [0.5, 1.0]


def test_ratio_ci_brackets_the_ratio_and_narrows_with_more_users():
    rng = np.random.default_rng(1)
    b = rng.random(2_000)
    a = b * 1.1  # every user 10% better: the interval is tight around 1.1
    ratio, lo, hi = ratio_ci(a, b)
    assert ratio == pytest.approx(1.1) and lo == pytest.approx(1.1) and hi == pytest.approx(1.1)
    noisy = b + rng.normal(0.02, 0.3, size=len(b))
    r_small = ratio_ci(noisy[:100], b[:100])
    r_large = ratio_ci(noisy, b)
    assert r_small[1] <= r_small[0] <= r_small[2]
    assert (r_large[2] - r_large[1]) < (r_small[2] - r_small[1])
    with pytest.raises(ValueError, match="same users"):
        ratio_ci(a[:3], b[:4])


def test_auc_counts_ordered_pairs_and_half_ties():
    from components.metrics import auc

    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == pytest.approx(1.0)
    assert auc(np.array([0.1, 0.2, 0.9]), np.array([1, 1, 0])) == pytest.approx(0.0)
    # pos {0.5, 0.3}, neg {0.5, 0.1}: pairs (0.5>0.1), (0.5=0.5 half), (0.3>0.1), (0.3<0.5) -> 2.5 / 4
    assert auc(np.array([0.5, 0.3, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.625)
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([0, 0])))
