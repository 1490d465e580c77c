"""The drift scenarios on the simulated world, through the monitoring job and the default trigger policy
(homefeed/drift_scenarios.py replays them; bench/monitoring_scenarios.py reports them per seed).

The default thresholds were chosen by looking at seed 0 of these worlds; these tests run seed 1, so they check the
policy on data it was not tuned on:

(a) no drift knob turned, 14 daily windows: not a single trigger;
(b) on day 17 half the users move 60% of their taste onto three long-tail interests (`small+shift`): the first
    trigger comes from the first day of data after the shift, and nothing triggers before it; the days after it,
    compared with a reference that starts at the change, start no second episode;
(c) a ranking model deployed two days before that shift goes stale: the engagement its feed gets in the simulated
    world falls, the policy triggers, the retraining trains on the data up to the triggering window, and on the next
    window the new model's feed gets more engagement than the stale model's would have.
"""

from __future__ import annotations

import pytest

from components.data.world.config import DAY_MS, preset
from components.data.world.simulate import simulate_world
from homefeed.drift_scenarios import interest_shift, lift, quiet_days, stale_model

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.quality]

SEED = 1  # not the seed the thresholds were chosen on


def world(tmp_path, name: str):
    config = preset(name, seed=SEED)
    simulate_world(config, tmp_path / "world")
    return tmp_path / "world", config


def test_no_drift_for_14_days_means_no_trigger(tmp_path):
    days = quiet_days(world(tmp_path, "small")[0], tmp_path)
    assert len(days) == 14
    assert [d["trigger"] for d in days] == [False] * 14, [d["why"] for d in days if d["trigger"]]
    # not vacuous: the windows are full days with engagement, and the figures the rules read are there
    assert all(d["impressions"] > 10_000 and d["engaged_interest_js"] > 0 and d["repin_drop"] for d in days)


def test_interest_shift_triggers_within_one_day_of_data(tmp_path):
    path, config = world(tmp_path, "small+shift")
    result = interest_shift(path, config, tmp_path, before=2, after=6)
    days, shift_ms = result["days"], result["shift_ms"]
    ends = [d["window_end_ms"] for d in days]
    assert len(days) == 8 and all(b - a == DAY_MS for a, b in zip(ends, ends[1:], strict=False))
    first = next(i for i, d in enumerate(days) if d["trigger"])
    assert first == 2 and not any(d["crossed"] for d in days[:first])
    assert ends[first - 1] <= shift_ms < ends[first] <= shift_ms + DAY_MS  # its window is the first day after
    assert days[first]["crossed"] and days[first]["snapshot_id"] is None  # no workspace here
    # one trigger: the following drifting day is the same episode, and once the reference starts at the change the
    # new normal starts none (with a reference reaching back before the shift it triggered again three days later)
    assert sum(d["trigger"] for d in days) == 1, [d["why"] for d in days]
    assert all(d["reference_start_ms"] == ends[first] - DAY_MS for d in days[first + 1 :])


def test_stale_model_decays_triggers_and_the_retrained_model_recovers(tmp_path):
    path, config = world(tmp_path, "small+shift")
    result = stale_model(path, config, tmp_path)
    before, change, after = result["days"][:2], result["days"][2], result["days"][3]
    stale_after = result["stale_on_last_day"]
    assert not any(d["trigger"] for d in before) and change["trigger"], [d["why"] for d in result["days"]]
    assert change["run"] == str(tmp_path / "retrained" / "ranking") and after["model"] == change["run"]
    assert all(d["model"] == result["stale_model"] for d in (*before, change, stale_after))
    # decay: the stale model's feed gets markedly less engagement once the world has changed
    assert change["sim_repin"] < 0.9 * min(d["sim_repin"] for d in before)
    # recovery: on the next window the retrained model's feed gets more than the stale model's would have, on the
    # same sampled requests (the same seed), so the difference is the models'
    assert after["sim_repin"] > stale_after["sim_repin"] and after["sim_repin_slate"] == stale_after["sim_repin_slate"]
    assert lift(after) > lift(stale_after)
