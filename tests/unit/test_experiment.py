"""The experiment's design (arm assignment, visit schedule, batches), the simulated users' draw and the report."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from components.data.contracts import ACTIONS, SEGMENTS
from components.data.world.config import DAY_MS, preset
from components.data.world.truth import OUTCOMES
from homefeed.experiment.design import Arm, ExperimentConfig, assign_arms, batches, schedule, visits
from homefeed.experiment.report import METRICS, build_report, markdown, per_user
from homefeed.experiment.users import _ACTION_OF_OUTCOME

pytestmark = pytest.mark.unit

ARMS = (Arm("control", "c"), Arm("treatment", "t"))


def _users(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return np.arange(n), rng.integers(0, len(SEGMENTS), n)


def test_outcomes_are_logged_as_the_actions_of_the_same_name():
    assert tuple(_ACTION_OF_OUTCOME[1:]) == OUTCOMES[1:] and ACTIONS[0] == "impression"


def test_arms_get_the_same_segment_mix_and_a_user_one_arm():
    ids, seg = _users()
    cfg = ExperimentConfig(users_per_arm=150, arms=ARMS, seed=3, design="split")
    a = assign_arms(ids, seg, cfg)
    assert a.groupby("arm").size().tolist() == [150, 150] and a["user_id"].is_unique
    mix = pd.crosstab(a["arm"], a["segment"], normalize="index")
    assert (mix.max() - mix.min()).max() < 0.08  # dealt out within each segment
    assert a.equals(assign_arms(ids, seg, cfg))  # same seed, same assignment
    assert not a.equals(assign_arms(ids, seg, ExperimentConfig(users_per_arm=150, arms=ARMS, seed=4, design="split")))


def test_the_paired_design_serves_the_same_users_on_the_same_visits_in_every_arm():
    ids, seg = _users()
    split = ExperimentConfig(users_per_arm=150, arms=ARMS, seed=3, design="split")
    paired = ExperimentConfig(users_per_arm=150, arms=ARMS, seed=3, design="paired")
    a = assign_arms(ids, seg, paired)
    by_arm = [a[a["arm"] == k].reset_index(drop=True) for k in (0, 1)]
    assert len(by_arm[0]) == 150 and by_arm[0][["user_id", "segment"]].equals(by_arm[1][["user_id", "segment"]])
    # the users are those a split test's first arm draws: stratified by segment the same way
    first = assign_arms(ids, seg, split)
    assert set(by_arm[0]["user_id"]) == set(first.loc[first["arm"] == 0, "user_id"])
    pages = schedule(preset("tiny"), a, 0, replace(paired, days=2))
    twins = [pages[pages["arm"] == k].drop(columns="arm").reset_index(drop=True) for k in (0, 1)]
    assert len(twins[0]) > 100 and twins[0].equals(twins[1])
    # a user's two copies are different users to the batching: both may be served in one batch
    assert any(b.size > len(set(pages["user_id"].to_numpy()[b])) for b in batches(pages, 64))
    with pytest.raises(ValueError, match="design must be one of"):
        ExperimentConfig(arms=ARMS, design="crossover")


def test_too_few_users_or_arms_is_a_clear_error():
    ids, seg = _users(50)
    with pytest.raises(ValueError, match="too few users"):
        assign_arms(ids, seg, ExperimentConfig(users_per_arm=40, arms=ARMS))
    with pytest.raises(ValueError, match="at least two arms"):
        ExperimentConfig(arms=ARMS[:1])


def test_the_schedule_follows_the_worlds_activity_and_stays_inside_the_days():
    ids, seg = _users(2000)
    cfg = ExperimentConfig(days=4, users_per_arm=1000, arms=ARMS, seed=1)
    world = preset("tiny")
    pages = schedule(world, assign_arms(ids, seg, cfg), 10 * DAY_MS, cfg)
    assert pages["ts"].is_monotonic_increasing
    assert pages["ts"].between(10 * DAY_MS, 14 * DAY_MS - 1).all()
    # a page belongs to its session's day; a session that starts before midnight may end after it
    assert ((pages["ts"] - 10 * DAY_MS) // DAY_MS - pages["day"]).isin([0, 1]).all()
    sessions = pages.groupby("session").agg(user=("user_id", "first"), users=("user_id", "nunique"))
    assert (sessions["users"] == 1).all()
    per_user_day = (
        pages.drop_duplicates("session").groupby("segment").size()
        / pages.drop_duplicates("user_id").groupby("segment").size()
    )
    core, casual = SEGMENTS.index("core"), SEGMENTS.index("casual")
    assert per_user_day[core] > 2 * per_user_day[casual]  # core users come back most (segment_activity)
    assert pages.groupby("session")["page"].max().mean() > 0.5  # sessions hold several pages


def test_a_days_visits_do_not_depend_on_how_many_days_are_drawn():
    # a live run (homefeed/live.py) goes on day by day: day 1 drawn as part of 2 days or of 5 is the same day
    ids, seg = _users(300)
    users = pd.DataFrame({"user_id": ids, "segment": seg})
    short, long = (visits(preset("tiny"), users, 10 * DAY_MS, n, seed=3) for n in (2, 5))
    first_two = long[long["ts"] < 12 * DAY_MS].reset_index(drop=True)
    pd.testing.assert_frame_equal(short, first_two)
    assert len(long) > 2 * len(short) and (long["arm"] == 0).all()  # no arms: every page in arm 0


def test_batches_keep_each_users_order_and_never_hold_a_user_twice():
    pages = pd.DataFrame({"user_id": [1, 2, 1, 3, 3, 4, 5, 1], "arm": 0})
    got = [b.tolist() for b in batches(pages, 3)]
    # first pages first (in time order), then second pages, then the third: a user's later page may share a batch
    # with another user's earlier one, never with their own
    assert got == [[0, 1, 3], [5, 6, 2], [4, 7]]
    ids, seg = _users(300)
    cfg = ExperimentConfig(days=2, users_per_arm=100, arms=ARMS, design="split")
    pages = schedule(preset("tiny"), assign_arms(ids, seg, cfg), 0, cfg)
    batch_of = np.empty(len(pages), dtype=np.int64)
    for i, b in enumerate(batches(pages, 32)):
        assert pages["user_id"].iloc[b].is_unique and len(b) <= 32
        batch_of[b] = i
    assert sorted(np.concatenate(batches(pages, 32)).tolist()) == list(range(len(pages)))  # every page, once
    # within each user, time order is batch order
    assert (pages.assign(batch=batch_of).groupby("user_id")["batch"].diff().dropna() > 0).all()


def _pages_for(effect: float, n=300, seed=0):
    """Two arms whose users repin at rates differing by `effect` (relative), with the same impressions."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm, rate in (("control", 0.05), ("treatment", 0.05 * (1 + effect))):
        for u in range(n):
            uid = u if arm == "control" else n + u
            rows.append({"user_id": uid, "arm": arm, "session": uid, "day": 0, "shown": 10,
                         "clicks": rng.binomial(10, 0.1), "repins": rng.binomial(10, rate),
                         "hides": rng.binomial(10, 0.02), "distinct_interests": 3})  # fmt: skip
    pages = pd.DataFrame(rows)
    assignment = pd.DataFrame({"user_id": np.arange(2 * n), "arm": ["control"] * n + ["treatment"] * n,
                               "segment": np.tile([SEGMENTS.index("core"), SEGMENTS.index("casual")], n)})  # fmt: skip
    return pages, assignment


def test_the_report_finds_a_real_effect_and_not_a_null_one():
    pages, assignment = _pages_for(1.0)
    report = build_report(pages, assignment, control="control", resamples=500)
    eff = report["segments"]["all"]["effects"]["repins"]["treatment"]
    assert eff["ci"][0] > 0.5 and eff["ci"][0] <= eff["relative"] <= eff["ci"][1]
    pages, assignment = _pages_for(0.0, seed=1)
    null = build_report(pages, assignment, control="control", resamples=500)["segments"]["all"]["effects"]
    assert null["repins"]["treatment"]["ci"][0] < 0 < null["repins"]["treatment"]["ci"][1]


def test_the_report_counts_users_who_never_came_and_splits_core_from_the_rest():
    pages, assignment = _pages_for(0.5)
    assignment = pd.concat([assignment, pd.DataFrame({"user_id": [10_000], "arm": ["control"], "segment": [0]})])
    users = per_user(pages, assignment)
    assert users.set_index("user_id").loc[10_000, "repins"] == 0
    report = build_report(pages, assignment, control="control", resamples=200)
    seg = report["segments"]
    assert seg["all"]["users"] == {"control": 301, "treatment": 300}
    assert seg["core"]["users"]["control"] + seg["non-core"]["users"]["control"] == 301
    assert set(seg["core"]["metrics"]) == set(METRICS)
    assert "| repins |" in markdown(report) and "treatment vs control" in markdown(report)
    with pytest.raises(ValueError, match="control arm"):
        build_report(pages, assignment, control="nobody")


def _heterogeneous(paired: bool, n=300, seed=0):
    """Users whose repin rates differ tenfold; treatment multiplies a user's rate by 1.15. Paired: the same users
    in both arms (as the paired design serves them); split: other users in the treatment arm."""
    rng = np.random.default_rng(seed)
    rows, assign = [], []
    rates = {arm: np.exp(rng.normal(np.log(0.03), 0.8, n)) for arm in ("control", "treatment")}
    for arm, lift in (("control", 1.0), ("treatment", 1.15)):
        base = rates["control"] if paired else rates[arm]
        for u in range(n):
            uid = u if paired or arm == "control" else n + u
            rows.append({"user_id": uid, "arm": arm, "session": uid, "day": 0, "shown": 200, "clicks": 0,
                         "repins": rng.binomial(200, min(base[u] * lift, 1.0)), "hides": 0,
                         "distinct_interests": 3})  # fmt: skip
            assign.append({"user_id": uid, "arm": arm, "segment": 0})
    return pd.DataFrame(rows), pd.DataFrame(assign)


def test_the_paired_report_keeps_arms_apart_and_narrows_the_interval():
    pages, assignment = _heterogeneous(paired=True)
    users = per_user(pages, assignment)
    assert (
        len(users) == 600
        and users.groupby("arm")["repins"].sum().to_dict() == pages.groupby("arm")["repins"].sum().to_dict()
    )
    paired = build_report(pages, assignment, control="control", resamples=1000)
    split = build_report(*_heterogeneous(paired=False), control="control", resamples=1000)
    assert paired["design"] == "paired" and split["design"] == "split"
    width = {}
    for name, report in (("paired", paired), ("split", split)):
        lo, hi = report["segments"]["all"]["effects"]["repin_rate"]["treatment"]["ci"]
        width[name] = hi - lo
    assert width["paired"] < 0.5 * width["split"], width
    assert paired["segments"]["all"]["effects"]["repin_rate"]["treatment"]["ci"][0] > 0.05


def test_the_forest_plot_draws_each_effect_inside_its_interval_coloured_by_what_it_shows(tmp_path):
    import json
    import xml.etree.ElementTree as ET

    from homefeed.experiment.plot import COLOURS, PLOTTED, effects_svg
    from homefeed.experiment.report import write
    from homefeed.ui.report import report_page

    pages, assignment = _pages_for(1.0)  # repins double: the repin rate's interval lies above zero
    report = build_report(pages, assignment, control="control", resamples=300)
    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.fromstring(effects_svg(report))
    circles, lines = root.findall("s:circle", ns), root.findall("s:line", ns)[1:]  # the first line is zero's
    rows = [
        (g, m)
        for g in report["segments"]
        for m in PLOTTED
        if report["segments"][g]["effects"][m]["treatment"]["ci"][0] is not None
    ]
    assert len(circles) == len(lines) == len(rows) > 0
    for circle, line, (group, metric) in zip(circles, lines, rows, strict=True):
        assert float(line.get("x1")) <= float(circle.get("cx")) <= float(line.get("x2"))
        if group == "all" and metric == "repin_rate":
            assert circle.get("fill") == COLOURS["good"]
        if metric == "diversity":  # the same in both arms: no interval clear of zero
            assert circle.get("fill") == COLOURS["unclear"]
    paths = write(report, tmp_path)
    assert ET.parse(paths["plot"]).getroot().tag.endswith("svg")
    page = report_page(paths["markdown"])
    assert "<figure><svg" in page and "<table>" in page
    assert json.loads(paths["json"].read_text())["arms"] == ["control", "treatment"]
