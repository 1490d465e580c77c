import numpy as np
import pandas as pd
import pytest

from components.data.dataset import Dataset
from components.features.sequence import PAD_PIN, ActionLog

pytestmark = pytest.mark.unit


def _events(rows):
    return pd.DataFrame(rows, columns=["user_id", "pin_id", "action", "ts"])


def test_newest_first_strictly_before_and_capped():
    ev = _events(
        [(1, p, "repin" if p % 2 else "hide", 1_000 + p) for p in range(150)]
        + [(1, 999, "impression", 1_100), (2, 7, "click", 1_050)]
    )
    log = ActionLog(ev)
    seq = log.sequences_at(np.array([1, 1, 2, 3]), np.array([1_100, 2_000, 1_050, 2_000]), max_len=100)
    # at t=1100 the action at exactly 1100 (pin 100) is excluded; impressions never appear
    assert seq.lengths.tolist() == [100, 100, 0, 0]
    assert seq.pin_ids[0, :3].tolist() == [99, 98, 97]
    assert seq.pin_ids[1, 0] == 149 and seq.pin_ids[1, -1] == 50
    assert (seq.pin_ids[2] == PAD_PIN).all() and (seq.pin_ids[3] == PAD_PIN).all()
    assert seq.row(0)["actions"][:2] == ["repin", "hide"]


def test_no_element_at_or_after_the_request_time(small_world):
    ev = Dataset(small_world).read("events")
    log = ActionLog(ev)
    imp = ev[ev.action == "impression"].sample(5_000, random_state=0)
    seq = log.sequences_at(imp.user_id.to_numpy(), imp.ts.to_numpy())
    filled = seq.pin_ids != PAD_PIN
    assert filled.any()
    assert (seq.ts[filled] < np.repeat(imp.ts.to_numpy()[:, None], seq.ts.shape[1], 1)[filled]).all()
    # newest first: timestamps never increase along a row
    assert (np.diff(np.where(filled, seq.ts, 0), axis=1)[filled[:, 1:]] <= 0).all()


def test_sequence_age_hours_is_request_minus_action_time_and_zero_where_empty():
    from components.train.examples import sequence_age_hours

    seq_ts = np.array([[7_200_000, 3_600_000, 0], [0, 0, 0]], dtype=np.int64)
    filled = np.array([[True, True, False], [False, False, False]])
    age = sequence_age_hours(seq_ts, np.array([10_800_000, 5]), filled)
    assert age.dtype == np.float32
    np.testing.assert_allclose(age, [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)  # ms / 3.6e6 in float32
