"""When the monitoring job's findings start a retraining run: thresholds, a cool-down, one run per drift episode.

A `TriggerPolicy` holds rules over a window's summary (monitoring/job.py). A rule *crosses* on a window when its
figure is past its threshold. The policy then:

- opens a drift episode on the first window where any rule crosses, and closes it on the first window where none
  does; it triggers at most once per episode (a drift that lasts a week is one problem, not seven);
- keeps a cool-down after each trigger (a retraining takes time to show: the windows right after it still hold the
  old model's traffic);
- in dry-run mode records what it would have done and submits nothing.

Each decision is appended to `triggers.jsonl` beside the state (`state.json`): the window, the snapshot id of the
report it read, the rules that crossed with their figures, and the run that was submitted (or why none was).

Rule kinds, over a window's summary (its `mean`, `reference_mean` and `drift`; per-group figures are columns of
their own, e.g. `repin_core`, monitoring/job.py):
    drop      mean[column] fell by at least `threshold` relative to the reference window's mean
    decay     mean[column] fell by at least `threshold` relative to the model's baseline: its figure on the first
              window monitored with it that lies after its training data (a stale model decays slowly; against a
              rolling reference that ages with it, a slow decay never shows)
    drift     the drift score of `column` is past `threshold` (Evidently's own test direction: a p-value below,
              a distance above)
    below     mean[column] is below `threshold`

After a trigger the state keeps a *reference floor*, the triggering window's start: the job's next reference windows
begin there (monitoring/job.py `Windows.ending`), so the days before the change stop counting as normal, and the
same change cannot start a second episode once the first has ended.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

KINDS = ("drop", "decay", "drift", "below")
STATE_FILE, LOG_FILE = "state.json", "triggers.jsonl"


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    column: str
    threshold: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"rule {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    def figure(self, summary: dict, baseline: dict | None = None) -> float | None:
        """The rule's figure on a window (None when the window does not have it, e.g. no model was scored).
        `baseline`: the model's figures on its first window (decay rules)."""
        if self.kind == "drift":
            found = summary["drift"].get(self.column)
            return None if found is None else found["score"]
        current = summary["mean"].get(self.column)
        if self.kind == "below" or current is None:
            return current
        means = baseline if self.kind == "decay" else summary.get("reference_mean")
        reference = (means or {}).get(self.column)
        if not reference:  # absent or zero: no relative change to speak of
            return None
        return (reference - current) / reference  # the relative drop (negative: a rise)

    def crosses(self, summary: dict, baseline: dict | None = None) -> bool:
        value = self.figure(summary, baseline)
        if value is None:
            return False
        if self.kind in ("drop", "decay"):
            return value >= self.threshold
        if self.kind == "below":
            return value < self.threshold
        method = summary["drift"][self.column]["method"]
        return value < self.threshold if method in P_VALUE_METHODS else value > self.threshold


# Evidently's tests whose score is a p-value (drift when below the threshold); the rest are distances.
P_VALUE_METHODS = ("z", "chisquare", "ks", "t_test", "fisher_exact", "mannw")


@dataclass
class TriggerPolicy:
    rules: list[Rule]
    cooldown_days: float = 3.0
    dry_run: bool = False

    def __post_init__(self) -> None:
        if not self.rules:
            raise ValueError("a trigger policy needs at least one rule")
        if self.cooldown_days < 0:
            raise ValueError(f"cooldown_days must be >= 0, got {self.cooldown_days}")

    @classmethod
    def default(cls, dry_run: bool = False) -> TriggerPolicy:
        """The rules `homefeed monitor run --trigger` applies.

        Chosen on seed 0 of world:small, a day against the week before (`python -m bench.monitoring_scenarios`
        reproduces the figures): with no drift knob turned, the repin rate fell by at most 6.6% and the engaged pins'
        interest distribution moved by a Jensen-Shannon distance of at most 0.086 over 14 days; on the first day of
        world:small+shift they moved by 22.5% and 0.136. tests/integration/test_monitoring_scenarios.py checks them
        on seed 1 (there: at most 9.1% and 0.094 on quiet days; 12.5% and 0.179 after the shift).
        The z-test alone is not a rule: impressions of one request or user are not independent, so it reports
        p < 0.05 on quiet days too. Per-segment rates and the sequence length (which grows as users act) are
        watched on the dashboard but trigger nothing. HIT@3 repin a fifth below the model's first window is the stale
        model's signal (a day's HIT@3 on world:small rests on about 350 repins: a standard error near 6% of it).
        """
        return cls(
            [
                Rule("repin rate fell", "drop", "repin", 0.2),
                Rule("engaged interests moved", "drift", "engaged_interest", 0.12),
                Rule("HIT@3 repin decayed", "decay", "top3_repin", 0.2),
            ],
            dry_run=dry_run,
        )

    @classmethod
    def from_file(cls, path: Path, dry_run: bool = False) -> TriggerPolicy:
        """A policy from JSON: {"rules": [{"name", "kind", "column", "threshold"}, ...], "cooldown_days": 3}."""
        try:
            spec = json.loads(Path(path).read_text())
            rules = [Rule(r["name"], r["kind"], r["column"], float(r["threshold"])) for r in spec["rules"]]
            return cls(rules, float(spec.get("cooldown_days", 3.0)), dry_run)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"trigger policy {path}: {exc!r}; expected "
                '{"rules": [{"name": ..., "kind": ..., "column": ..., "threshold": ...}], "cooldown_days": 3}'
            ) from exc


@dataclass
class TriggerState:
    in_episode: bool = False
    episode_triggered: bool = False
    last_trigger_end_ms: int | None = None
    triggers: int = 0
    windows: list[str] = field(default_factory=list)
    reference_floor_ms: int | None = None  # where reference windows start since the last trigger
    model: str | None = None  # the model the last window was scored with
    baseline: dict[str, float | None] = field(default_factory=dict)  # its figures, first window after training

    @classmethod
    def load(cls, folder: Path) -> TriggerState:
        path = Path(folder) / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def save(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tmp = Path(folder) / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(Path(folder) / STATE_FILE)


def evaluate(
    summary: dict,
    policy: TriggerPolicy,
    folder: Path,
    submit: Callable[[dict], str] | None = None,
) -> dict:
    """Decide on one window's summary, update the state in `folder`, and submit a retraining when due.

    `submit(decision) -> run id` starts the retraining (kfp.local or the KFP client); it is called only when the
    policy triggers and not in dry-run. Returns the decision (also appended to triggers.jsonl).
    """
    state = TriggerState.load(folder)
    end_ms = summary["windows"]["current"]["end_ms"]
    window = f"{end_ms}"
    if window in state.windows:
        raise ValueError(f"window ending at {end_ms} was already evaluated: each window counts once in an episode")
    if summary.get("model") != state.model:  # a new model (or the first window): a new baseline
        state.model, state.baseline = summary.get("model"), {}
    trained_until = summary.get("model_trained_until_ms")
    if not state.baseline and (trained_until is None or summary["windows"]["current"]["start_ms"] >= trained_until):
        # the model's first window after its training data: on the data it was trained on it would look better than
        # it is, and every later window would seem to have decayed
        state.baseline = dict(summary["mean"])
    crossed = [
        {
            "rule": r.name,
            "column": r.column,
            "kind": r.kind,
            "value": r.figure(summary, state.baseline),
            "threshold": r.threshold,
        }
        for r in policy.rules
        if r.crosses(summary, state.baseline)
    ]
    starts = bool(crossed) and not state.in_episode
    if not crossed:
        state.in_episode, state.episode_triggered = False, False
    elif starts:
        state.in_episode, state.episode_triggered = True, False
    cooling = (
        state.last_trigger_end_ms is not None and end_ms - state.last_trigger_end_ms < policy.cooldown_days * 86_400_000
    )
    due = bool(crossed) and not state.episode_triggered and not cooling
    decision = {
        "window_end_ms": end_ms,
        "snapshot_id": summary.get("snapshot_id"),
        "crossed": crossed,
        "episode": "started" if starts else ("ongoing" if crossed else "none"),
        "trigger": due,
        "dry_run": policy.dry_run,
        "run": None,
        "why": _why(crossed, due, state.episode_triggered, cooling),
    }
    if due:
        state.episode_triggered = True
        state.last_trigger_end_ms = end_ms
        state.reference_floor_ms = summary["windows"]["current"]["start_ms"]
        state.triggers += 1
        if not policy.dry_run and submit is not None:
            decision["run"] = submit(decision)
    state.windows.append(window)
    state.save(folder)
    with open(Path(folder) / LOG_FILE, "a") as log:
        log.write(json.dumps(decision) + "\n")
    return decision


def _why(crossed: list, due: bool, already: bool, cooling: bool) -> str:
    if not crossed:
        return "no rule crossed"
    names = ", ".join(c["rule"] for c in crossed)
    if due:
        return f"retrain: {names}"
    if already:
        return f"{names} crossed, but this drift episode already triggered a retraining"
    return f"{names} crossed, but the cool-down after the last retraining has not passed" if cooling else names
