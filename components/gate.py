"""The champion/challenger gate: deploy a freshly trained model only if it is not worse than the one serving.

A challenger's offline metrics (`Evaluation.flat()`, components/evaluate/result.py) are compared, metric by
metric, with the champion's under a `GatePolicy`: each gated metric has a direction (higher or lower is better) and a tolerance, the
amount by which the challenger may trail the champion and still pass. The challenger is deployed only when every
gated metric passes. Metrics that are not in the policy are carried along (they end up in KFP Metrics) but never
decide anything; baselines (`*_popularity`, `*_random`) describe the data, not the model, and may not be gated on.

A first model (no champion yet) has nothing to be compared with, so it is held to a floor instead (`FirstModel`):
by default each gated metric must beat the baselines the evaluation measured next to it, in the rule's direction.
A model that cannot beat popularity would otherwise become the champion every later model is measured against.

Example:
    policy = GatePolicy.default()
    d = decide({"recall@100": 0.52, "hit@3_repin": 0.41, ...}, {"recall@100": 0.50, "hit@3_repin": 0.40, ...}, policy)
    d.deploy        # True
    d.reasons[0]    # 'recall@100 0.52 vs champion 0.5: ok (higher is better, tolerance 0.01)'
    d.as_metrics()  # {'challenger/recall@100': 0.52, 'champion/recall@100': 0.5, ..., 'gate/deploy': 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Direction = Literal["higher", "lower"]

# Suffixes of the baseline figures `flat_metrics` reports next to the model's own (popularity retrieval, random
# ranking): they move with the data window, not with the model, so gating on them would reject good models on a
# day whose data is simply harder.
BASELINE_SUFFIXES = ("_popularity", "_random")

# The default slack, absolute. A day of holdout gives a few thousand requests/users per figure; a rate near 0.4
# measured on ~5,000 of them has a standard error of sqrt(0.4 * 0.6 / 5000) ~ 0.007. Differences below ~0.01 are
# therefore mostly noise, and a retrain on a fresh window should not be blocked by noise; a real regression is larger.
DEFAULT_TOLERANCE = 0.01

UNMEASURABLE = "not measurable on this holdout (its baseline is undefined too: no events of this kind), not compared"

# Comparisons of floats at the exact edge of the tolerance (0.39 vs 0.40 - 0.01) must not hinge on rounding.
_EPS = 1e-12

_RULE_KEYS = {"direction", "tolerance", "relative"}
# The one key of a policy's plain form that is not a metric: the floor for a first model (FirstModel).
FIRST_MODEL_KEY = "first_model"
_FIRST_MODEL_KEYS = {"beat_baselines", "margin"}


def is_baseline(metric: str) -> bool:
    """True for the baseline figures reported next to the model's own (never gated on)."""
    return metric.endswith(BASELINE_SUFFIXES)


@dataclass(frozen=True)
class Rule:
    """How one metric is compared.

    `tolerance` is how far the challenger may trail the champion and still pass: an absolute amount, or, with
    `relative`, a fraction of the champion's value (0.02 = 2% of it).

    Example:
        Rule("lower", 0.01).allowance(0.2)            # 0.01
        Rule("higher", 0.05, relative=True).allowance(0.4)  # 0.02
    """

    direction: Direction = "higher"
    tolerance: float = DEFAULT_TOLERANCE
    relative: bool = False

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', not {self.direction!r}")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, int | float):
            raise ValueError(f"tolerance must be a number, not {self.tolerance!r}")
        if not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise ValueError(f"tolerance must be a finite number >= 0, not {self.tolerance!r}")
        if not isinstance(self.relative, bool):
            raise ValueError(f"relative must be true or false, not {self.relative!r}")

    def allowance(self, champion: float) -> float:
        """The slack for this champion value."""
        return self.tolerance * abs(champion) if self.relative else self.tolerance

    def describe(self) -> str:
        slack = f"{self.tolerance:.4g} of champion" if self.relative else f"{self.tolerance:.4g}"
        return f"{self.direction} is better, tolerance {slack}"

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "tolerance": self.tolerance, "relative": self.relative}


@dataclass(frozen=True)
class FirstModel:
    """The floor for a first model (no champion yet).

    `beat_baselines`: each gated metric must be better than its baselines (`*_popularity`, `*_random`, as the
    evaluation reports them) by more than `margin` (absolute), in the metric's direction. Off, a first model only
    needs finite figures.

    Example:
        FirstModel().margin                      # 0.0
        FirstModel(beat_baselines=False)         # no floor: any measurable first model deploys
    """

    beat_baselines: bool = True
    margin: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.beat_baselines, bool):
            raise ValueError(f"beat_baselines must be true or false, not {self.beat_baselines!r}")
        if isinstance(self.margin, bool) or not isinstance(self.margin, int | float):
            raise ValueError(f"margin must be a number, not {self.margin!r}")
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"margin must be a finite number >= 0, not {self.margin!r}")

    @classmethod
    def from_dict(cls, raw: Any) -> FirstModel:
        if not isinstance(raw, Mapping):
            raise ValueError(f"gate policy: {FIRST_MODEL_KEY}: expected a mapping, got {raw!r}")
        unknown = sorted(set(raw) - _FIRST_MODEL_KEYS)
        if unknown:
            raise ValueError(
                f"gate policy: {FIRST_MODEL_KEY}.{unknown[0]}: unknown key (known: {sorted(_FIRST_MODEL_KEYS)})"
            )
        for key in sorted(raw):
            try:
                cls(**{key: raw[key]})
            except ValueError as e:
                raise ValueError(f"gate policy: {FIRST_MODEL_KEY}.{key}: {e}") from None
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return {"beat_baselines": self.beat_baselines, "margin": self.margin}


@dataclass(frozen=True)
class GatePolicy:
    """The gated metrics and how each is compared, and the floor for a first model.

    Example:
        GatePolicy.default().rules["hit@3_hide"]         # Rule(direction='lower', tolerance=0.01, relative=False)
        GatePolicy.from_dict({"recall@100": {"direction": "higher", "tolerance": 0.02}})
        GatePolicy.from_dict({"recall@100": {"direction": "higher"}, "first_model": {"beat_baselines": False}})
    """

    rules: Mapping[str, Rule] = field(default_factory=dict)
    first_model: FirstModel = field(default_factory=FirstModel)

    def __post_init__(self) -> None:
        if not isinstance(self.first_model, FirstModel):
            raise ValueError(f"{FIRST_MODEL_KEY}: expected a FirstModel, got {type(self.first_model).__name__}")
        if not self.rules:
            # an empty policy would deploy anything: almost certainly a settings mistake, not an intent
            raise ValueError("a gate policy needs at least one metric")
        for metric, rule in self.rules.items():
            if is_baseline(metric):
                raise ValueError(f"{metric}: a baseline figure, not a model metric; it cannot be gated on")
            if metric == FIRST_MODEL_KEY:
                raise ValueError(f"{metric}: the first-model floor's key, not a metric")
            if not isinstance(rule, Rule):
                raise ValueError(f"{metric}: expected a Rule, got {type(rule).__name__}")

    @classmethod
    def default(cls) -> GatePolicy:
        """Our metrics: retrieval recall and the ranking heads' HIT@3; hides are bad, so fewer of them on top is better."""
        return cls(
            {
                "recall@100": Rule("higher"),
                "recall@10": Rule("higher"),
                "hit@3_repin": Rule("higher"),
                "hit@3_click": Rule("higher"),
                "hit@3_hide": Rule("lower"),
            }
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GatePolicy:
        """A policy from plain data (settings, a CLI's JSON): `{metric: {"direction", "tolerance"?, "relative"?}}`,
        plus, optionally, `"first_model": {"beat_baselines"?, "margin"?}` (FirstModel; absent: its defaults).

        `tolerance` defaults to DEFAULT_TOLERANCE and `relative` to false; `direction` is required, because guessing
        it wrong would invert the gate. Errors name the offending key, e.g. `gate policy: hit@3_hide.direction: ...`.
        """
        if not isinstance(raw, Mapping):
            raise ValueError(f"gate policy: expected a mapping of metric -> rule, got {type(raw).__name__}")
        first_model = FirstModel.from_dict(raw[FIRST_MODEL_KEY]) if FIRST_MODEL_KEY in raw else FirstModel()
        rules: dict[str, Rule] = {}
        for metric, spec in raw.items():
            if metric == FIRST_MODEL_KEY:
                continue
            if not isinstance(metric, str) or not metric:
                raise ValueError(f"gate policy: metric names must be non-empty strings, got {metric!r}")
            if not isinstance(spec, Mapping):
                raise ValueError(f"gate policy: {metric}: expected a mapping, got {spec!r}")
            unknown = sorted(set(spec) - _RULE_KEYS)
            if unknown:
                raise ValueError(f"gate policy: {metric}.{unknown[0]}: unknown key (known: {sorted(_RULE_KEYS)})")
            if "direction" not in spec:
                raise ValueError(f"gate policy: {metric}.direction: required ('higher' or 'lower')")
            for key in ("direction", "tolerance", "relative"):
                if key not in spec:
                    continue
                try:
                    Rule(**{key: spec[key]})
                except ValueError as e:
                    raise ValueError(f"gate policy: {metric}.{key}: {e}") from None
            rules[metric] = Rule(
                spec["direction"], spec.get("tolerance", DEFAULT_TOLERANCE), spec.get("relative", False)
            )
        try:
            return cls(rules, first_model)
        except ValueError as e:
            raise ValueError(f"gate policy: {e}") from None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The plain form `from_dict` reads, the first-model floor included (a record says what was applied)."""
        return {metric: rule.to_dict() for metric, rule in self.rules.items()} | {
            FIRST_MODEL_KEY: self.first_model.to_dict()
        }


@dataclass(frozen=True)
class MetricCheck:
    """One gated metric's comparison. `champion`/`delta` are None when there was nothing to compare with;
    `delta` is challenger - champion (its sign means better or worse according to the rule's direction).
    `baseline`: for a first model held to the floor, the baseline figure it was compared with (the strongest one)."""

    metric: str
    challenger: float | None
    champion: float | None
    delta: float | None
    ok: bool
    reason: str
    baseline: float | None = None


@dataclass(frozen=True)
class Decision:
    """The gate's verdict, with everything needed to record it."""

    deploy: bool
    reasons: list[str]
    per_metric: list[MetricCheck]
    challenger: dict[str, float]
    champion: dict[str, float] | None

    def as_metrics(self) -> dict[str, float]:
        """Both metric sets and the verdict, flat, as KFP Metrics take them (`metrics.log_metric(name, value)`).

        Keys: `challenger/<metric>`, `champion/<metric>` (every finite figure of each side, gated or not),
        `gate/<metric>_ok` (1.0/0.0 per gated metric), `gate/deploy` (1.0/0.0). Non-finite figures are left out
        (KFP writes metrics as JSON, which has no NaN); `reasons` says what they were.
        """
        out: dict[str, float] = {}
        for side, values in (("challenger", self.challenger), ("champion", self.champion or {})):
            out |= {f"{side}/{k}": float(v) for k, v in values.items() if _finite(v)}
        out |= {f"gate/{c.metric}_ok": float(c.ok) for c in self.per_metric}
        out["gate/deploy"] = float(self.deploy)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (non-finite figures become null), e.g. for `Registry.record`."""
        return {
            "deploy": self.deploy,
            "reasons": list(self.reasons),
            "per_metric": [
                {
                    "metric": c.metric,
                    "challenger": _json_float(c.challenger),
                    "champion": _json_float(c.champion),
                    "delta": _json_float(c.delta),
                    "baseline": _json_float(c.baseline),
                    "ok": c.ok,
                }
                for c in self.per_metric
            ],
            "challenger": {k: _json_float(v) for k, v in self.challenger.items()},
            "champion": None if self.champion is None else {k: _json_float(v) for k, v in self.champion.items()},
        }

    def refused(self, why: str) -> Decision:
        """This decision turned into a refusal for a reason outside the metric comparison (the champion cannot be
        loaded, say): the checks stay as they were, and the verdict says why nothing deploys."""
        return replace(self, deploy=False, reasons=[*self.reasons[:-1], f"not deployed: {why}"])


def decide(
    challenger: Mapping[str, float], champion: Mapping[str, float] | None, policy: GatePolicy | None = None
) -> Decision:
    """Compare a challenger with the champion under `policy` (the default one when None).

    - no champion (None: the first run) -> each gated metric must beat its baselines (policy.first_model), and
      the challenger's own figures must be present and finite: a broken evaluation is not deployed even with
      nothing to beat; a metric without a (finite) baseline is not held to one, and the reason says so;
    - a gated metric missing from the challenger, or NaN/inf there -> that metric fails, so no deploy; unless its
      baseline is NaN as well: then the holdout has no events of that kind (no hides at all, say), the figure is
      undefined for any model, and it is not compared;
    - a gated metric missing (or non-finite) on the champion's side -> not compared, noted, does not block;
    - otherwise it passes when the challenger trails the champion by at most the rule's allowance.

    Example:
        decide({"hit@3_hide": 0.12}, {"hit@3_hide": 0.10},
               GatePolicy({"hit@3_hide": Rule("lower", 0.01)})).deploy   # False: 0.02 more hides on top
    """
    policy = policy or GatePolicy.default()
    challenger = {k: float(v) for k, v in challenger.items()}
    champion_d = None if champion is None else {k: float(v) for k, v in champion.items()}

    floor = policy.first_model if champion_d is None and policy.first_model.beat_baselines else None
    checks: list[MetricCheck] = []
    reasons: list[str] = []
    if champion_d is None:
        reasons.append(
            "no champion yet: deploying the first model"
            if floor is None
            else f"no champion yet: the first model must beat the evaluation's baselines ({_describe(floor)})"
        )
    for metric, rule in policy.rules.items():
        old = None if champion_d is None else champion_d.get(metric)
        if _unmeasurable(metric, challenger):
            check = MetricCheck(metric, challenger[metric], old, None, True, f"{metric}: {UNMEASURABLE}")
        else:
            check = _check(metric, rule, challenger.get(metric), old)
            if floor is not None and check.ok:
                check = _check_floor(metric, rule, challenger[metric], challenger, floor)
        checks.append(check)
        reasons.append(check.reason)

    deploy = all(c.ok for c in checks)
    failed = [c.metric for c in checks if not c.ok]
    reasons.append(
        f"not deployed: {', '.join(failed)} did not pass" if failed else "deployed: every gated metric passed"
    )
    return Decision(deploy, reasons, checks, challenger, champion_d)


def _check_floor(metric: str, rule: Rule, new: float, figures: Mapping[str, float], floor: FirstModel) -> MetricCheck:
    """A first model's metric against the baselines next to it: better than each by more than the margin."""
    baselines = {s[1:]: figures[metric + s] for s in BASELINE_SUFFIXES if _finite(figures.get(metric + s))}
    if not baselines:
        return MetricCheck(metric, new, None, None, True, f"{metric} {new:.4g}: no baseline figure, not held to one")
    # the strongest baseline in the rule's direction: beating it beats them all
    name, base = (max if rule.direction == "higher" else min)(baselines.items(), key=lambda kv: kv[1])
    lift = new - base if rule.direction == "higher" else base - new
    ok = lift > floor.margin + _EPS
    verdict = "beats it" if ok else "does not beat it"
    by = f" by more than {floor.margin:.4g}" if floor.margin else ""
    reason = (
        f"{metric} {new:.4g} vs {name} baseline {base:.4g}: {verdict}{by} ({rule.direction} is better; first model)"
    )
    return MetricCheck(metric, new, None, None, ok, reason, baseline=base)


def _describe(floor: FirstModel) -> str:
    by = f" by more than {floor.margin:.4g}" if floor.margin else ""
    return (
        f"each gated metric better than its baselines{by}; policy {FIRST_MODEL_KEY}.beat_baselines: false turns it off"
    )


def _unmeasurable(metric: str, figures: Mapping[str, float]) -> bool:
    """Whether `metric` is undefined on this holdout rather than broken: it is non-finite and so is its baseline,
    which does not depend on the model (e.g. HIT@3 hide on a holdout without a single hide: MovieLens has none)."""
    if _finite(figures.get(metric, 0.0)):
        return False
    baselines = [figures[metric + s] for s in BASELINE_SUFFIXES if metric + s in figures]
    return bool(baselines) and not any(_finite(b) for b in baselines)


def _check(metric: str, rule: Rule, new: float | None, old: float | None) -> MetricCheck:
    how = f"({rule.describe()})"
    if new is None:
        return MetricCheck(metric, None, old, None, False, f"{metric}: missing from the challenger's metrics: fail")
    if not _finite(new):
        return MetricCheck(metric, new, old, None, False, f"{metric} is {new} for the challenger: fail")
    if old is None:
        return MetricCheck(metric, new, None, None, True, f"{metric} {new:.4g}: champion has none, not compared")
    if not _finite(old):
        return MetricCheck(metric, new, old, None, True, f"{metric} {new:.4g}: champion's is {old}, not compared")
    delta = new - old
    # worse: how far the challenger trails in the rule's direction (negative when it is better)
    worse = -delta if rule.direction == "higher" else delta
    ok = worse <= rule.allowance(old) + _EPS
    verdict = "ok" if ok else f"worse by {worse:.4g}"
    return MetricCheck(metric, new, old, delta, ok, f"{metric} {new:.4g} vs champion {old:.4g}: {verdict} {how}")


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _json_float(x: float | None) -> float | None:
    return x if x is not None and _finite(x) else None
