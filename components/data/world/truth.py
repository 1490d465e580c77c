"""The world's ground truth: the latent state behind every simulated action, queryable for any (user, pin, time).

The generator draws logged actions from `GroundTruth.action_probs`; evaluation and the simulated online
experiments query the same object, so there is one definition of what a user likes.

Model, per (user u, pin p, time t):
    taste_t(u)   = (1 - lam(t)) * taste(u) + lam(t) * late_taste(u)        slow drift, lam(t) = 1 - exp(-r * days)
                   then, for shifted users after the shift day, (1 - s) * taste_t + s * shift_target
    intent(u, t) = an interest drawn from taste_t(u), redrawn every `intent_minutes` (hash of user and time block,
                   so it needs no stored schedule and is the same whenever it is asked for)
    x            = 4 * taste_t . sim(p) + w_i * sim(p)[intent] + 2 * (quality - 0.5) + 0.5 * freshness(p, t) - 1.5
    affinity     = sigmoid(x)
where sim(p)[k] is the cosine between the pin's latent topic vector and interest k's centroid. Actions on an
impression are one multinomial draw over {none, click, repin, hide} with logits linear in x (hides fall as x rises)
plus the user's segment propensity for click and repin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.data.contracts import SEGMENTS

DAY_MS = 86_400_000
OUTCOMES = ("none", "click", "repin", "hide")

# Logit = intercept + slope * x, relative to "none". Chosen so that a well-matched pin gets about 10% repins and
# a poorly matched one about 3% hides: a real feed's rates in order of magnitude, hides concentrated on low affinity.
_OUTCOME_INTERCEPT = np.array([-3.3, -3.8, -5.0], dtype=np.float32)
_OUTCOME_SLOPE = np.array([0.8, 1.2, -0.8], dtype=np.float32)
_PROPENSITY_APPLIES = np.array([1.0, 1.0, 0.0], dtype=np.float32)  # segment propensity raises click and repin only


@dataclass
class GroundTruth:
    centroids: np.ndarray  # [K, d] unit interest centroids
    pin_latent: np.ndarray  # [P, d] unit latent topic vectors
    pin_interest: np.ndarray  # [P]
    pin_quality: np.ndarray  # [P] in (0, 1)
    pin_created_ms: np.ndarray  # [P]
    user_taste: np.ndarray  # [U, K] rows sum to 1
    user_late_taste: np.ndarray  # [U, K] where taste drifts to
    user_segment: np.ndarray  # [U] index into SEGMENTS
    user_active_from_ms: np.ndarray  # [U] first moment the user is active in the span
    user_intent_phase_ms: np.ndarray  # [U] offsets the intent blocks so users do not switch in lockstep
    user_shifted: np.ndarray  # [U] bool: takes part in the interest shift
    shift_target: np.ndarray  # [K] taste that shifted users move towards (zeros when there is no shift)
    params: dict  # scalars: start_ms, intent_ms, intent_weight, half_life_days, drift_per_day, shift_ms, ...

    def __post_init__(self) -> None:
        self.pin_sim = (self.pin_latent @ self.centroids.T).astype(np.float32)  # [P, K]
        self._propensity = np.array([self.params["segment_propensity"][s] for s in SEGMENTS], dtype=np.float32)

    @property
    def n_users(self) -> int:
        return len(self.user_taste)

    @property
    def n_pins(self) -> int:
        return len(self.pin_latent)

    # --- queries ---------------------------------------------------------------------------------------------

    def taste_at(self, users: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """[N, K] taste of each user at each time."""
        users = np.asarray(users)
        days = np.maximum(np.asarray(ts, dtype=np.int64) - self.params["start_ms"], 0) / DAY_MS
        lam = (1.0 - np.exp(-self.params["drift_per_day"] * days)).astype(np.float32)[:, None]
        taste = (1.0 - lam) * self.user_taste[users] + lam * self.user_late_taste[users]
        shift_ms = self.params.get("shift_ms")
        if shift_ms is not None:
            s = self.params["shift_strength"] * (self.user_shifted[users] & (np.asarray(ts) >= shift_ms))
            s = s.astype(np.float32)[:, None]
            taste = (1.0 - s) * taste + s * self.shift_target[None, :]
        return taste

    def intent_at(self, users: np.ndarray, ts: np.ndarray, taste: np.ndarray | None = None) -> np.ndarray:
        """[N] the short-term intent (an interest id), drawn from the taste at that time."""
        users = np.asarray(users, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.int64)
        if taste is None:
            taste = self.taste_at(users, ts)
        block = (ts + self.user_intent_phase_ms[users]) // self.params["intent_ms"]
        u = _hash_uniform(users, block, self.params["hash_key"])
        return _inverse_cdf(taste, u)

    def logits(self, users: np.ndarray, pins: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """[N] the affinity logit x of each (user, pin, time)."""
        taste = self.taste_at(users, ts)
        intent = self.intent_at(users, ts, taste)
        return self.logits_given_state(taste, intent, pins, ts)

    def logits_given_state(self, taste: np.ndarray, intent: np.ndarray, pins: np.ndarray, ts: np.ndarray):
        """As `logits`, for callers that computed taste and intent once per request and score many pins."""
        pins = np.asarray(pins)
        sim = self.pin_sim[pins]
        match = np.einsum("ij,ij->i", taste, sim)
        intent_match = sim[np.arange(len(pins)), intent]
        age_days = np.maximum(np.asarray(ts, dtype=np.int64) - self.pin_created_ms[pins], 0) / DAY_MS
        fresh = np.exp2(-age_days / self.params["half_life_days"]).astype(np.float32)
        x = (
            4.0 * match
            + self.params["intent_weight"] * intent_match
            + 2.0 * (self.pin_quality[pins] - 0.5)
            + 0.5 * fresh
            - 1.5
        )
        return x.astype(np.float32)

    def affinity(self, users: np.ndarray, pins: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """[N] ground-truth affinity in (0, 1)."""
        return _sigmoid(self.logits(users, pins, ts))

    def outcome_probs(self, x: np.ndarray, users: np.ndarray) -> np.ndarray:
        """[N, 4] probabilities of none, click, repin, hide for an impression with affinity logit x."""
        prop = self._propensity[self.user_segment[np.asarray(users)]]
        logit = (
            _OUTCOME_INTERCEPT[None, :]
            + _OUTCOME_SLOPE[None, :] * x[:, None]
            + _PROPENSITY_APPLIES[None, :] * prop[:, None]
        )
        e = np.exp(logit)
        denom = 1.0 + e.sum(axis=1, keepdims=True)
        return np.concatenate([1.0 / denom, e / denom], axis=1)

    def action_probs(self, users: np.ndarray, pins: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """[N, 4] probabilities of none, click, repin, hide if the pin is shown to the user at that time."""
        return self.outcome_probs(self.logits(users, pins, ts), users)

    # --- persistence -----------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        arrays = {k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray) and not k.startswith("_")}
        arrays.pop("pin_sim")  # derived on load
        with open(path, "wb") as fh:  # np.savez on a handle writes no file-name dependent bytes
            np.savez(fh, params=np.array(json.dumps(self.params, sort_keys=True)), **arrays)

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        with np.load(path) as data:
            kwargs = {k: data[k] for k in data.files if k != "params"}
            params = json.loads(str(data["params"]))
        return cls(params=params, **kwargs)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _hash_uniform(a: np.ndarray, b: np.ndarray, key: int) -> np.ndarray:
    """A uniform in [0, 1) from two integers and a key (splitmix64 finaliser): stateless, so it can be asked again."""
    with np.errstate(over="ignore"):
        z = a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + b.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        z = z + np.uint64(key)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _inverse_cdf(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: the first column whose cumulative weight exceeds u * row total."""
    cum = np.cumsum(weights, axis=1)
    target = (u * cum[:, -1])[:, None]
    idx = (cum <= target).sum(axis=1)
    return np.minimum(idx, weights.shape[1] - 1)
