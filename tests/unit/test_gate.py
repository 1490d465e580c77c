import math

import pytest

from components.gate import DEFAULT_TOLERANCE, FirstModel, GatePolicy, Rule, decide

pytestmark = pytest.mark.unit

CHAMPION = {
    "recall@10": 0.20,
    "recall@100": 0.50,
    "recall@10_popularity": 0.05,
    "hit@3_repin": 0.40,
    "hit@3_click": 0.30,
    "hit@3_hide": 0.10,
    "hit@3_repin_random": 0.15,
}


def challenger(**changes: float) -> dict[str, float]:
    return CHAMPION | changes


def check(decision, metric):
    return next(c for c in decision.per_metric if c.metric == metric)


def test_better_challenger_is_deployed():
    d = decide(challenger(**{"recall@100": 0.55, "hit@3_repin": 0.45, "hit@3_hide": 0.08}), CHAMPION)
    assert d.deploy
    assert all(c.ok for c in d.per_metric)
    assert check(d, "recall@100").delta == pytest.approx(0.05)
    assert "hit@3_repin 0.45 vs champion 0.4: ok (higher is better, tolerance 0.01)" in d.reasons


def test_worse_by_more_than_tolerance_is_not_deployed():
    d = decide(challenger(**{"hit@3_repin": 0.37}), CHAMPION)
    assert not d.deploy
    assert [c.metric for c in d.per_metric if not c.ok] == ["hit@3_repin"]
    assert any(r.startswith("hit@3_repin 0.37 vs champion 0.4: worse by 0.03") for r in d.reasons)
    assert d.reasons[-1] == "not deployed: hit@3_repin did not pass"


def test_worse_within_tolerance_is_deployed_including_the_exact_edge():
    # 0.39 = 0.40 - 0.01 exactly in decimal, not in binary: the edge counts as within
    d = decide(challenger(**{"hit@3_repin": 0.39, "recall@100": 0.495}), CHAMPION)
    assert d.deploy, d.reasons
    assert check(d, "hit@3_repin").ok


def test_hide_is_lower_is_better():
    assert decide(challenger(**{"hit@3_hide": 0.05}), CHAMPION).deploy  # fewer hides on top: better
    more_hides = decide(challenger(**{"hit@3_hide": 0.13}), CHAMPION)
    assert not more_hides.deploy
    assert not check(more_hides, "hit@3_hide").ok
    assert "lower is better" in check(more_hides, "hit@3_hide").reason
    # the same rise on a higher-better metric would be fine
    assert decide(challenger(**{"hit@3_click": 0.33}), CHAMPION).deploy


def test_relative_tolerance_scales_with_the_champion():
    policy = GatePolicy({"recall@100": Rule("higher", 0.05, relative=True)})  # 5% of 0.50 = 0.025
    assert decide(challenger(**{"recall@100": 0.48}), CHAMPION, policy).deploy
    assert not decide(challenger(**{"recall@100": 0.47}), CHAMPION, policy).deploy


def test_baselines_and_unlisted_metrics_do_not_gate():
    # the popularity baseline collapsing and the random baseline changing decide nothing
    d = decide(challenger(**{"recall@10_popularity": 0.0, "hit@3_repin_random": 0.9}), CHAMPION)
    assert d.deploy
    assert {c.metric for c in d.per_metric} == {"recall@10", "recall@100", "hit@3_repin", "hit@3_click", "hit@3_hide"}


def test_challenger_missing_a_gated_metric_fails():
    new = challenger()
    del new["hit@3_click"]
    d = decide(new, CHAMPION)
    assert not d.deploy
    assert not check(d, "hit@3_click").ok
    assert "hit@3_click: missing from the challenger's metrics: fail" in d.reasons


def test_champion_missing_a_metric_is_not_compared_but_noted():
    old = dict(CHAMPION)
    del old["hit@3_click"]
    d = decide(challenger(**{"hit@3_click": 0.01}), old)  # would fail against 0.30
    assert d.deploy
    c = check(d, "hit@3_click")
    assert c.ok and c.champion is None and c.delta is None
    assert "champion has none, not compared" in c.reason


def test_nan_in_the_challenger_blocks_deploy_with_a_reason():
    d = decide(challenger(**{"hit@3_hide": math.nan}), CHAMPION)
    assert not d.deploy
    assert "hit@3_hide is nan for the challenger: fail" in d.reasons
    # also on a first run: a broken evaluation is not deployed just because there is nothing to beat
    assert not decide(challenger(**{"recall@10": math.nan}), None).deploy


def test_a_figure_undefined_on_the_holdout_does_not_block():
    """No hides in the holdout (MovieLens has none): HIT@3 hide is NaN for every model, its random baseline too."""
    no_hides = {"hit@3_hide": math.nan, "hit@3_hide_random": math.nan}
    d = decide(challenger(**no_hides), CHAMPION | no_hides)
    assert d.deploy, d.reasons
    assert "hit@3_hide: not measurable on this holdout" in check(d, "hit@3_hide").reason
    assert decide(challenger(**no_hides), None).deploy  # a first run on such data deploys too
    # the model's figure NaN while its baseline is defined: the evaluation broke, which still blocks
    broken = decide(challenger(**{"hit@3_hide": math.nan, "hit@3_hide_random": 0.3}), CHAMPION)
    assert not broken.deploy and not check(broken, "hit@3_hide").ok
    # and without a baseline to tell, NaN blocks as before
    assert not decide(challenger(**{"hit@3_hide": math.nan}), None).deploy


def test_first_run_deploys_with_no_champion_yet():
    d = decide(challenger(), None)
    assert d.deploy
    assert d.reasons[0].startswith("no champion yet")
    assert all(c.champion is None for c in d.per_metric)
    assert not any(k.startswith("champion/") for k in d.as_metrics())


# The audit's first retrieval model: far below recommending the most popular pins
WEAK_FIRST = challenger(**{"recall@100": 0.080, "recall@100_popularity": 0.334})


def test_a_first_model_must_beat_the_baselines_by_default():
    d = decide(WEAK_FIRST, None)
    assert not d.deploy and d.reasons[-1] == "not deployed: recall@100 did not pass"
    assert d.reasons[0].startswith("no champion yet: the first model must beat the evaluation's baselines")
    c = check(d, "recall@100")
    assert c.baseline == 0.334 and c.champion is None and c.delta is None
    assert c.reason == "recall@100 0.08 vs popularity baseline 0.334: does not beat it (higher is better; first model)"
    assert d.to_dict()["per_metric"][0]["baseline"] == 0.334
    # lower is better: more hides on top than a random order does not beat it
    hides = decide(challenger(**{"hit@3_hide": 0.35, "hit@3_hide_random": 0.33}), None)
    assert not hides.deploy and not check(hides, "hit@3_hide").ok
    assert "random baseline 0.33: does not beat it (lower is better" in check(hides, "hit@3_hide").reason
    # a tie does not beat it; a metric without a baseline is not held to one, and says so
    assert not decide(challenger(**{"recall@10": 0.05}), None).deploy
    assert "no baseline figure, not held to one" in check(decide(challenger(), None), "recall@100").reason


def test_the_first_model_floor_is_configurable():
    off = GatePolicy(GatePolicy.default().rules, FirstModel(beat_baselines=False))
    d = decide(WEAK_FIRST, None, off)
    assert d.deploy and d.reasons[0] == "no champion yet: deploying the first model"
    assert decide(challenger(**{"recall@10": math.nan}), None, off).deploy is False  # broken figures still block
    margin = GatePolicy(GatePolicy.default().rules, FirstModel(margin=0.2))  # recall@10 0.20 vs 0.05: 0.15 only
    assert not check(decide(challenger(), None, margin), "recall@10").ok
    assert "by more than 0.2" in check(decide(challenger(), None, margin), "recall@10").reason
    # with a champion the floor plays no part: the champion is the bar
    assert decide(WEAK_FIRST, WEAK_FIRST).deploy


def test_the_first_model_floor_round_trips_through_the_policy_dict():
    raw = {"recall@100": {"direction": "higher"}, "first_model": {"beat_baselines": False, "margin": 0.02}}
    p = GatePolicy.from_dict(raw)
    assert p.first_model == FirstModel(False, 0.02) and set(p.rules) == {"recall@100"}
    assert GatePolicy.from_dict(p.to_dict()) == p
    assert GatePolicy.from_dict({"recall@100": {"direction": "higher"}}).first_model == FirstModel()
    assert GatePolicy.default().to_dict()["first_model"] == {"beat_baselines": True, "margin": 0.0}


@pytest.mark.parametrize(
    ("floor", "names"),
    [({"beat_baselines": "no"}, "first_model.beat_baselines"), ({"margin": -0.1}, "first_model.margin"),
     ({"margin": "0.1"}, "first_model.margin"), ({"floor": 0.1}, "first_model.floor"), (False, "first_model")],
)  # fmt: skip
def test_first_model_errors_name_the_bad_key(floor, names):
    with pytest.raises(ValueError, match="gate policy") as e:
        GatePolicy.from_dict({"recall@100": {"direction": "higher"}, "first_model": floor})
    assert names in str(e.value)


def test_as_metrics_flattens_both_sides_and_the_decision():
    d = decide(challenger(**{"hit@3_repin": 0.30, "hit@3_hide": math.nan}), CHAMPION)
    m = d.as_metrics()
    assert m["gate/deploy"] == 0.0
    assert m["challenger/hit@3_repin"] == 0.30 and m["champion/hit@3_repin"] == 0.40
    assert m["challenger/recall@10_popularity"] == 0.05  # carried along, though never gated
    assert m["gate/hit@3_repin_ok"] == 0.0 and m["gate/recall@100_ok"] == 1.0
    assert "challenger/hit@3_hide" not in m  # NaN has no JSON form; the reasons carry it
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert decide(challenger(), CHAMPION).as_metrics()["gate/deploy"] == 1.0


def test_to_dict_is_json_safe():
    import json

    d = decide(challenger(**{"hit@3_hide": math.nan}), CHAMPION)
    raw = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert raw["deploy"] is False
    assert raw["challenger"]["hit@3_hide"] is None


def test_default_policy_covers_our_metrics_with_the_right_directions():
    rules = GatePolicy.default().rules
    assert {m: r.direction for m, r in rules.items()} == {
        "recall@100": "higher",
        "recall@10": "higher",
        "hit@3_repin": "higher",
        "hit@3_click": "higher",
        "hit@3_hide": "lower",
    }
    assert all(r.tolerance == DEFAULT_TOLERANCE and not r.relative for r in rules.values())


def test_policy_from_dict_round_trips_and_fills_defaults():
    p = GatePolicy.from_dict(
        {"recall@100": {"direction": "higher"}, "hit@3_hide": {"direction": "lower", "tolerance": 0}}
    )
    assert p.rules["recall@100"] == Rule("higher", DEFAULT_TOLERANCE, False)
    assert p.rules["hit@3_hide"] == Rule("lower", 0, False)
    assert GatePolicy.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"recall@100": {"direction": "up"}}, "recall@100.direction"),
        ({"recall@100": {"tolerance": 0.1}}, "recall@100.direction"),
        ({"recall@100": {"direction": "higher", "tolerance": -0.1}}, "recall@100.tolerance"),
        ({"recall@100": {"direction": "higher", "tolerance": "0.1"}}, "recall@100.tolerance"),
        ({"recall@100": {"direction": "higher", "tolerance": math.nan}}, "recall@100.tolerance"),
        ({"recall@100": {"direction": "higher", "relative": "yes"}}, "recall@100.relative"),
        ({"recall@100": {"direction": "higher", "tolerence": 0.1}}, "recall@100.tolerence"),
        ({"recall@100": "higher"}, "recall@100"),
        ({"recall@10_popularity": {"direction": "higher"}}, "recall@10_popularity"),
        ({"hit@3_repin_random": {"direction": "higher"}}, "hit@3_repin_random"),
        ({}, "at least one metric"),
        (["recall@100"], "mapping"),
    ],
)
def test_policy_from_dict_errors_name_the_bad_key(raw, names):
    with pytest.raises(ValueError, match="gate policy") as e:
        GatePolicy.from_dict(raw)
    assert names in str(e.value)
