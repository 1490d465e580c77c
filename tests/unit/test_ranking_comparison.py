"""The figures of `homefeed eval ranking` on hand-made cases."""

import numpy as np
import pytest

from components.evaluate.ranking_comparison import concentration, measure
from models.ranking.pinnability import BLEND, HEADS

pytestmark = pytest.mark.unit


def test_concentration_counts_top3_pins_in_the_last_actions_interest():
    # request 1: scores put pins of interest 7, 7, 2 on top (pin of 5 last); last action's interest 7 -> 2/3
    # request 2: the user has no action yet (-1): left out
    rid = np.array([1, 1, 1, 1, 2, 2])
    score = np.array([0.9, 0.8, 0.7, 0.1, 0.5, 0.4])
    cand_interest = np.array([7, 7, 2, 5, 7, 7])
    last = np.array([7, 7, 7, 7, -1, -1])
    assert concentration(rid, score, cand_interest, last) == 2 / 3
    assert np.isnan(concentration(rid[4:], score[4:], cand_interest[4:], last[4:]))


def _held(n_requests: int = 50, slate: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = n_requests * slate
    labels = np.zeros((n, 3), dtype=np.float32)
    for r in range(n_requests):  # one repin and one hide per slate, on different pins
        repin, hide = r * slate + rng.choice(slate, 2, replace=False)
        labels[repin, HEADS.index("repin")] = labels[hide, HEADS.index("hide")] = 1
    return {
        "request_id": np.repeat(np.arange(n_requests), slate),
        "labels": labels,
        "segment": rng.integers(0, 4, n),
        "interest": rng.integers(0, 3, n),
        "seq_pin_ids": np.where(rng.random((n, 5)) < 0.8, rng.integers(0, 20, (n, 5)), -1),
    }


def test_hide_in_the_served_order_rewards_a_model_that_pushes_hides_down():
    held = _held()
    pin_interest = np.arange(20) % 3
    labels = held["labels"]
    # a perfect model: repin head = repin label, hide head = hide label; the served blend ranks hides last
    perfect = measure(labels.copy(), held, pin_interest)
    assert perfect["hit@3"]["repin"] == 1.0 and perfect["hit@3"]["hide"] == 1.0  # each head finds its own label
    assert perfect["auc"]["repin"] == 1.0 and perfect["auc"]["hide"] == 1.0
    assert perfect["served_hit@3"]["hide"] == 0.0  # served last of 6
    # the inverted model serves hides first
    inverted = measure(1.0 - labels, held, pin_interest)
    assert inverted["served_hit@3"]["hide"] == 1.0
    assert BLEND["hide"] < 0 < BLEND["repin"]
    assert set(perfect["segments"]) == {"core", "non-core"}
