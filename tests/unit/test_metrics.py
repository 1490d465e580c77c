import numpy as np
import pytest

from components.evaluate.metrics import hit_at_k, recall_at_k

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
