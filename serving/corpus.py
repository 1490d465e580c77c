"""The serving corpus as the predictors hold it in memory: each pin's interest and image signature, and the most
popular pins per interest, for lookups that must not cost a network call per candidate.

Loaded from the index directory: `index.json` names the corpus version the live collection was built from
(pipelines/steps.py, `index_pins`), and `corpus/v<N>/` holds that version's table (components/index/corpus.py).
The table is small next to the model (a few columns per pin), and reading it at start-up means:

- ranking gets every candidate's interest from memory (no per-candidate Feast read);
- retrieval has its fallbacks without Milvus or Feast: the popular pins, by the time-decayed engagement score the
  corpus was selected by, overall or of some interests (cold start for a user the model does not know, and the
  `degraded` answer when Milvus or the feature store cannot be reached).

Example:
    corpus = ServingCorpus.load(index_dir)
    corpus.interest_of(np.array([12, 999_999]))          # [3, -1]: -1 for a pin outside the corpus
    corpus.popular(10, interests=(3, 5), exclude={12})   # hits, round robin over interests 3 and 5
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.index.bundle import IndexBundle
from components.index.corpus import GRANULARITIES, read_corpus
from models.retrieval.multi_embedding import round_robin_merge

POPULAR = "popular"  # the source of a fallback candidate when no interest narrows it


@dataclass(frozen=True)
class ServingCorpus:
    pin_id: np.ndarray  # [N] int64, sorted
    interest: np.ndarray  # [N] int64, aligned with pin_id
    signature: np.ndarray  # [N] int64 image signature at the corpus' dedup granularity
    score: np.ndarray  # [N] float time-decayed engagement
    version: int
    # pin rows best first (score, then pin id): overall, and per interest
    _by_score: np.ndarray
    _by_interest: dict[int, np.ndarray]

    @classmethod
    def load(cls, index_dir: Path) -> ServingCorpus:
        corpus = IndexBundle.read(index_dir).corpus
        table, manifest = read_corpus(Path(index_dir) / "corpus", corpus["version"])
        return cls.from_table(table, manifest["options"]["granularity"], corpus["version"])

    @classmethod
    def from_table(cls, table: pd.DataFrame, granularity: str, version: int = 0) -> ServingCorpus:
        table = table.sort_values("pin_id").reset_index(drop=True)
        score = table["score"].to_numpy(dtype=np.float64)
        interest = table["interest_id"].to_numpy(dtype=np.int64)
        pin_id = table["pin_id"].to_numpy(dtype=np.int64)
        by_score = np.lexsort((pin_id, -score))
        return cls(
            pin_id=pin_id,
            interest=interest,
            signature=table[GRANULARITIES[granularity]].to_numpy(dtype=np.int64),
            score=score,
            version=version,
            _by_score=by_score,
            _by_interest={int(i): by_score[interest[by_score] == i] for i in np.unique(interest)},
        )

    def __len__(self) -> int:
        return len(self.pin_id)

    def rows(self, pin_ids: np.ndarray) -> np.ndarray:
        """Row of each pin in the corpus arrays, -1 for a pin the corpus does not hold."""
        pin_ids = np.asarray(pin_ids, dtype=np.int64)
        if not len(self.pin_id):
            return np.full(len(pin_ids), -1, dtype=np.int64)
        pos = np.searchsorted(self.pin_id, pin_ids).clip(max=len(self.pin_id) - 1)
        return np.where(self.pin_id[pos] == pin_ids, pos, -1)

    def interest_of(self, pin_ids: np.ndarray) -> np.ndarray:
        """Interest of each pin, -1 for a pin the corpus does not hold."""
        rows = self.rows(pin_ids)
        return np.where(rows >= 0, self.interest[rows.clip(min=0)], -1)

    def popular(self, k: int, interests: tuple[int, ...] | None = None, exclude=frozenset()) -> list[dict]:
        """The `k` most popular pins (fewer if the corpus has fewer), as retrieval hits, none of `exclude`.

        With `interests`, only pins of those, merged round robin (each interest's best pins near the top, as the
        personalised queries are); `source` says which list a pin came from.
        """
        if interests:
            lists = [self._hits(self._by_interest.get(i, np.empty(0, np.int64)), f"{POPULAR}_interest_{i}", k, exclude)
                     for i in interests]  # fmt: skip
        else:
            lists = [self._hits(self._by_score, POPULAR, k, exclude)]
        return round_robin_merge(lists, k, key=lambda hit: hit["image_signature"])

    def interests(self) -> list[int]:
        """The interests the corpus has pins of, ascending."""
        return sorted(self._by_interest)

    def _hits(self, rows: np.ndarray, source: str, k: int, exclude) -> list[dict]:
        hits = []
        for r in rows:
            if len(hits) == k:
                break
            if int(self.pin_id[r]) in exclude:
                continue
            hits.append(
                {
                    "pin_id": int(self.pin_id[r]),
                    "score": float(self.score[r]),
                    "interest_id": int(self.interest[r]),
                    "image_signature": int(self.signature[r]),
                    "source": source,
                }
            )
        return hits
