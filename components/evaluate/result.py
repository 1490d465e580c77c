"""The evaluation artifact: what the evaluate step measured on the holdout, as the gate and the registry read it.

    evaluation.json   {"split": TimeSplit, "retrieval": {...}, "ranking": {...}} (keys sorted)

`flat()` is the form the gate compares and KFP Metrics show: one `name: value` per figure, each model's figure next
to its baseline's (popularity for retrieval, a random order for ranking).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.artifacts import read_json, write_json
from components.data.split import TimeSplit

EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class Evaluation:
    split: TimeSplit
    retrieval: dict  # users, recall {k: value}, popularity_recall {k: value} (components/evaluate/offline.py)
    ranking: dict  # impressions, requests, hit@3_<head> and hit@3_<head>_random

    def to_json(self) -> dict:
        return {"split": self.split.to_json(), "retrieval": self.retrieval, "ranking": self.ranking}

    @classmethod
    def from_json(cls, data: dict) -> Evaluation:
        return cls(TimeSplit.from_json(data["split"]), data["retrieval"], data["ranking"])

    def flat(self) -> dict[str, float]:
        """The scalar figures as `name: value`, the form KFP Metrics take."""
        return flat_metrics(self.to_json())

    def write(self, out_dir: Path) -> Path:
        return write_json(out_dir, EVALUATION_FILE, self.to_json(), sort_keys=True)

    @classmethod
    def read(cls, evaluation_dir: Path) -> Evaluation:
        return cls.from_json(read_json(evaluation_dir, EVALUATION_FILE, "evaluation"))


def flat_metrics(evaluation: dict) -> dict[str, float]:
    """`Evaluation.flat` of an evaluation's JSON form (also what the registry keeps of each version)."""
    out = {f"recall@{k}": v for k, v in evaluation["retrieval"]["recall"].items()}
    out |= {f"recall@{k}_popularity": v for k, v in evaluation["retrieval"]["popularity_recall"].items()}
    out |= {k: v for k, v in evaluation["ranking"].items() if k.startswith("hit@")}
    return {k: float(v) for k, v in out.items()}
