"""The trigger policy's bookkeeping on hand-made window summaries: thresholds in both test directions, one run per
drift episode, the cool-down, dry-run, and the record of why."""

from __future__ import annotations

import json

import pytest

from monitoring.trigger import LOG_FILE, Rule, TriggerPolicy, TriggerState, evaluate

pytestmark = pytest.mark.unit

DAY = 86_400_000
RULES = [
    Rule("repin rate drop", "drop", "repin", 0.2),
    Rule("engaged interest drift", "drift", "engaged_interest", 0.1),
    Rule("repin z-test", "drift", "repin_flag", 0.05),
    Rule("HIT@3 repin low", "below", "top3_repin", 0.2),
]


def summary(
    day: int, repin: float = 0.03, interest_js: float = 0.02, p: float = 0.5, hit: float = 0.4, model: str = "m1"
) -> dict:
    return {
        "windows": {"current": {"start_ms": (day - 1) * DAY, "end_ms": day * DAY}},
        "model": model,
        "snapshot_id": f"snap-{day}",
        "mean": {"repin": repin, "top3_repin": hit},
        "reference_mean": {"repin": 0.03, "top3_repin": 0.4},
        "drift": {
            "engaged_interest": {"score": interest_js, "method": "jensenshannon"},
            "repin_flag": {"score": p, "method": "z"},
        },
    }


def run(tmp_path, days: list[dict], **policy) -> list[dict]:
    submitted = []

    def submit(decision):
        submitted.append(decision["window_end_ms"])
        return f"run-{len(submitted)}"

    out = [evaluate(s, TriggerPolicy(RULES, **policy), tmp_path, submit) for s in days]
    assert [d["run"] for d in out if d["run"]] == [f"run-{i + 1}" for i in range(len(submitted))]
    return out


def test_quiet_windows_never_trigger(tmp_path):
    decisions = run(tmp_path, [summary(d) for d in range(1, 15)])
    assert not any(d["trigger"] or d["crossed"] for d in decisions)
    assert TriggerState.load(tmp_path).triggers == 0


def test_each_rule_crosses_in_its_own_direction(tmp_path):
    s = summary(1, repin=0.023, interest_js=0.15, p=0.01, hit=0.1)
    (decision,) = run(tmp_path, [s])
    assert {c["rule"] for c in decision["crossed"]} == {r.name for r in RULES}
    drop = next(c for c in decision["crossed"] if c["rule"] == "repin rate drop")
    assert drop["value"] == pytest.approx(0.2333, abs=1e-4)
    # a rise is not a drop, a high p-value is not drift, a small distance is not drift
    (quiet,) = run(tmp_path / "b", [summary(1, repin=0.04, interest_js=0.09, p=0.06, hit=0.2)])
    assert quiet["crossed"] == []


def test_one_run_per_drift_episode(tmp_path):
    days = [summary(1), summary(2, interest_js=0.3), summary(3, interest_js=0.3), summary(4, interest_js=0.3),
            summary(5), summary(9, interest_js=0.3)]  # fmt: skip
    decisions = run(tmp_path, days, cooldown_days=0)
    assert [d["trigger"] for d in decisions] == [False, True, False, False, False, True]
    assert [d["episode"] for d in decisions] == ["none", "started", "ongoing", "ongoing", "none", "started"]
    assert "already triggered" in decisions[2]["why"]
    log = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [entry["snapshot_id"] for entry in log if entry["trigger"]] == ["snap-2", "snap-9"]
    assert log[1]["crossed"][0]["rule"] == "engaged interest drift" and log[1]["run"] == "run-1"


def test_cool_down_delays_a_new_episode_until_it_has_passed(tmp_path):
    days = [summary(1, repin=0.01), summary(2), summary(3, repin=0.01), summary(4, repin=0.01), summary(5, repin=0.01)]
    decisions = run(tmp_path, days, cooldown_days=3)
    assert [d["trigger"] for d in decisions] == [True, False, False, True, False]
    assert "cool-down" in decisions[2]["why"]


def test_dry_run_records_but_submits_nothing(tmp_path):
    (decision,) = run(tmp_path, [summary(1, repin=0.01)], dry_run=True)
    assert decision["trigger"] and decision["dry_run"] and decision["run"] is None
    assert TriggerState.load(tmp_path).triggers == 1


def test_a_window_counts_once_and_missing_figures_do_not_cross(tmp_path):
    run(tmp_path, [summary(1)])
    with pytest.raises(ValueError, match="already evaluated"):
        run(tmp_path, [summary(1)])
    no_model = summary(2)
    del no_model["mean"]["top3_repin"]
    (decision,) = run(tmp_path / "c", [no_model])
    assert decision["crossed"] == []


def test_bad_policies_are_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        Rule("x", "rise", "repin", 0.1)
    with pytest.raises(ValueError, match="at least one rule"):
        TriggerPolicy([])
    with pytest.raises(ValueError, match="cooldown_days"):
        TriggerPolicy(RULES, cooldown_days=-1)


def test_decay_is_measured_from_the_models_first_window(tmp_path):
    """A slow decay never crosses a rolling reference (it ages with the model); against the model's own first
    window it does, and a new model starts a new baseline."""
    rules = [Rule("HIT@3 repin decayed", "decay", "top3_repin", 0.2)]
    hits = [0.40, 0.38, 0.36, 0.34, 0.31]  # -5% a day; each day's reference_mean is 0.4 here, which decay ignores
    days = [summary(d + 1, hit=h) for d, h in enumerate(hits)]
    days.append(summary(6, hit=0.30, model="m2"))  # the retrained model's first window: its own baseline
    days.append(summary(7, hit=0.29, model="m2"))
    decisions = [evaluate(s, TriggerPolicy(rules, cooldown_days=0), tmp_path) for s in days]
    figures = [d["crossed"][0]["value"] if d["crossed"] else None for d in decisions]
    assert [d["trigger"] for d in decisions] == [False, False, False, False, True, False, False]
    assert figures[4] == pytest.approx(0.225)
    state = TriggerState.load(tmp_path)
    assert state.model == "m2" and state.baseline["top3_repin"] == 0.30


def test_the_baseline_is_the_first_window_after_the_training_data(tmp_path):
    """A window the model was trained on flatters it: it is not the baseline, or every later day would seem decayed."""
    rules = [Rule("HIT@3 repin decayed", "decay", "top3_repin", 0.2)]
    days = [summary(d, hit=h) for d, h in ((1, 0.55), (2, 0.40), (3, 0.41), (4, 0.38))]
    for s in days:
        s["model_trained_until_ms"] = 1 * DAY  # trained on data up to the end of day 1 (window 1 is in-sample)
    decisions = [evaluate(s, TriggerPolicy(rules), tmp_path) for s in days]
    assert not any(d["crossed"] for d in decisions)  # 0.38 against 0.55 would have crossed
    assert TriggerState.load(tmp_path).baseline["top3_repin"] == 0.40


def test_a_trigger_sets_the_reference_floor_at_its_window(tmp_path):
    from monitoring.job import Windows

    decisions = run(tmp_path, [summary(5), summary(6, repin=0.01), summary(7)])
    assert [d["trigger"] for d in decisions] == [False, True, False]
    floor = TriggerState.load(tmp_path).reference_floor_ms
    assert floor == 5 * DAY  # the start of the window that triggered
    after = Windows.ending(9 * DAY, reference_days=7, not_before=floor)
    assert (after.reference_start, after.current_start) == (5 * DAY, 8 * DAY)
    assert Windows.ending(20 * DAY, reference_days=7, not_before=floor).reference_start == 12 * DAY  # past the floor
    # a floor inside the current window would leave no reference: it is ignored
    assert Windows.ending(6 * DAY, reference_days=7, not_before=floor + DAY // 2).reference_start == -2 * DAY
