"""The drift scenarios on the simulated world: the monitoring job and the trigger policy replayed over past days,
as `homefeed monitor run --trigger` would have run them each day. The scenario tests assert on these results
(tests/integration/test_monitoring_scenarios.py), and `python -m bench.monitoring_scenarios` reports them per seed,
with the figures the default thresholds were chosen from (monitoring/trigger.py).

- `quiet_days`: a world with no drift knob turned; what the rules' figures do on ordinary days.
- `interest_shift`: a world:…+shift, the days around the shift, with the default policy in dry run.
- `stale_model`: a ranking model trained two days before the shift serves across it; the policy triggers, the
  retraining trains the pipeline's retrieval and ranking steps on the data up to the triggering window, and the
  next window is scored with the new model, and with the stale one for comparison, on the same requests.

Each window becomes a row of plain figures (`day_row`), so the results are JSON.
"""

from __future__ import annotations

from pathlib import Path

from components.data.world.config import DAY_MS, WorldConfig
from monitoring.job import Windows, run_window
from monitoring.replay import monitor_days
from monitoring.trigger import TriggerPolicy
from monitoring.window import Source


def day_row(day: dict) -> dict:
    """One monitored window's figures: what the default rules read, the model's, and the policy's decision."""
    s, d = day["summary"], day["decision"]
    mean, ref = s["mean"], s["reference_mean"]
    row = {
        "label": day["label"],
        "window_end_ms": s["windows"]["current"]["end_ms"],
        "reference_start_ms": s["windows"]["reference"]["start_ms"],
        "impressions": s["windows"]["current"]["impressions"],
        "repin": mean["repin"],
        "repin_drop": (ref["repin"] - mean["repin"]) / ref["repin"] if ref.get("repin") else None,
        "engaged_interest_js": s["drift"]["engaged_interest"]["score"],
        "model": s["model"],
        "top3_repin": mean.get("top3_repin"),
        "sim_repin": mean.get("sim_repin"),
        "sim_repin_slate": mean.get("sim_repin_slate"),
        "snapshot_id": s["snapshot_id"],
    }
    if d is not None:
        row |= {"trigger": d["trigger"], "crossed": [c["rule"] for c in d["crossed"]], "why": d["why"], "run": d["run"]}
    return row


def quiet_days(world: Path, root: Path, days: int = 14) -> list[dict]:
    """The dataset's last `days` daily windows under the default policy in dry run."""
    source = Source.load(world)
    ends = [source.end_ms() - back * DAY_MS for back in range(days - 1, -1, -1)]
    return [day_row(d) for d in monitor_days(source, ends, root, policy=TriggerPolicy.default(dry_run=True))]


def shift_ms(config: WorldConfig) -> int:
    if config.interest_shift is None:
        raise ValueError("the world has no interest shift: use a `+shift` preset")
    return config.start_ms + round(config.interest_shift.day * DAY_MS)


def interest_shift(world: Path, config: WorldConfig, root: Path, before: int = 2, after: int = 6) -> dict:
    """`before` daily windows before the shift and `after` from it on (the first of them holds the shift: windows
    end where the data's days end), under the default policy in dry run."""
    source = Source.load(world)
    end = source.end_ms()
    back = (end - shift_ms(config)) // DAY_MS  # the window ending `back` days before the end holds the shift
    ends = [end - b * DAY_MS for b in range(back + before, back - after, -1)]
    days = monitor_days(source, ends, root, policy=TriggerPolicy.default(dry_run=True))
    return {"shift_ms": shift_ms(config), "days": [day_row(d) for d in days]}


def train_model(world: Path, out: Path, end_ms: int) -> Path:
    """What the retraining pipeline trains (its retrieval and ranking steps with the pipeline's default epochs,
    ranking window and examples) on the data before `end_ms`; returns the ranking model's directory."""
    from pipelines import steps

    split = steps.TimeSplit(end_ms - 3 * DAY_MS, end_ms, end_ms + DAY_MS)  # ranking on the 3 days before the end
    steps.train_retrieval_step(world, out / "retrieval", split, epochs=3)
    steps.train_ranking_step(world, out / "retrieval", out / "ranking", split, epochs=2, max_examples=30_000)
    return out / "ranking"


def stale_model(world: Path, config: WorldConfig, root: Path) -> dict:
    """A model trained up to two days before the shift serves the two days before it and the day after; the default
    policy (not a dry run) triggers a retraining, whose model serves the next day. That day is also scored with the
    stale model, on the same sampled requests, so the difference between the two is the models'."""
    source = Source.load(world)
    change = shift_ms(config)
    stale = train_model(world, root / "stale", change - 2 * DAY_MS)
    serving = {"model": stale}

    def retrain(decision: dict) -> str:  # the submitted run: trains on the data up to the window that triggered
        serving["model"] = train_model(world, root / "retrained", decision["window_end_ms"])
        return str(serving["model"])

    ends = [change - DAY_MS, change, change + DAY_MS, change + 2 * DAY_MS]
    days = monitor_days(source, ends, root, lambda: serving["model"], TriggerPolicy.default(), retrain)
    stale_next = run_window(world, Windows.ending(ends[-1]), root / "stale-reports", stale, source=source)
    return {
        "shift_ms": change,
        "stale_model": str(stale),
        "days": [day_row(d) for d in days],
        "stale_on_last_day": day_row({"label": days[-1]["label"], "summary": stale_next, "decision": None}),
    }


def lift(row: dict) -> float:
    """The model's top 3 over the whole slate in the world's repin probability: (top 3 / slate) - 1."""
    return row["sim_repin"] / row["sim_repin_slate"] - 1
