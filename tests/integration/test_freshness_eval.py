"""`homefeed eval freshness` end to end on a small drifting world: the arms, the schedule and the per-day figures."""

import json

import pytest
from click.testing import CliRunner

from components.data.world.config import preset
from components.data.world.simulate import simulate_world
from homefeed.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def drifting_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("drifting")
    simulate_world(preset("tiny+intent+drift", n_events=60_000), out)  # tiny's 30k: too few positives per window
    return out


@pytest.mark.slow
@pytest.mark.quality
def test_freshness_measures_a_stale_and_a_retrained_arm_every_day(drifting_world, tmp_path):
    out = tmp_path / "fresh"
    args = ["eval", "freshness", "--dataset", str(drifting_world), "--variants", "none", "--first-cut-day", "8"]
    args += ["--train-days", "3", "--retrain-days", "3", "--max-train", "3000", "--epochs", "1", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    r = json.loads((out / "freshness.json").read_text())
    assert r["retrain_days_from_start"] == [8.0, 11.0]
    days = r["days"]
    assert [d["day"] for d in days] == [8.0, 9.0, 10.0, 11.0, 12.0]  # each whole day after the first cut
    for d in days:
        stale, retrained = d["none/stale"], d["none/retrained"]
        assert d["random"]["hit@3_repin"] < d["ground_truth"]["hit@3_repin"]
        if d["day"] < 11:  # before the first retraining both arms serve the same model
            assert d["retrained_model_day"] == 8.0 and stale == retrained
        else:
            assert d["retrained_model_day"] == 11.0 and stale != retrained
        assert stale["lift_share"] == pytest.approx(
            (stale["hit@3_repin"] - d["random"]["hit@3_repin"])
            / (d["ground_truth"]["hit@3_repin"] - d["random"]["hit@3_repin"])
        )
    assert r["summary"]["none"]["days_after_first_retrain"] == 2
    assert "| none |" in (out / "freshness.md").read_text()


def test_freshness_refuses_a_schedule_the_data_cannot_hold(drifting_world, tmp_path):
    args = ["eval", "freshness", "--dataset", str(drifting_world), "--first-cut-day", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "needs data before the window" in result.output
