"""The ranking predictor (GPU when there is one): Pinnability with the TransAct sequence scores each user's candidates.

Request (KServe v1, `POST /v1/models/ranking:predict`):
    {"instances": [{"user_id": 7, "candidates": [12, 845, 3]}]}
    1..1000 distinct pin ids per user.
Response:
    {"predictions": [{"user_id": 7, "scores": [{"pin_id", "click", "repin", "hide", "score"}, ...], "unscored": []}]}
    Per candidate the three head probabilities and their blend `score` (BLEND below); best score first.
    `unscored`: candidates the online store has no features for (in request order). The index and the feature store
    are filled by different steps, so a pin can be searchable before its features land (an index rebuilt from a
    newer corpus than the store's); ranking says so instead of failing the request.

Per request: one online read of the users (profile + the full 100-action sequence), one online read of all
candidates' interests, and one forward pass over every (user, candidate) pair of every instance. The pretrained
user embedding is the one the model was trained with (user_embeddings.npy in the model directory).
"""

from __future__ import annotations

import time
from pathlib import Path

import kserve
import numpy as np
import torch
from feast import FeatureStore

from components.features.store import online_pin_features
from components.train.examples import sequence_age_hours
from components.train.ranking import load_pinnability
from models.ranking.pinnability import BLEND, HEADS
from serving.online import OnlineUsers, request_users
from serving.payload import integer, integer_list, v1_instances

MAX_CANDIDATES = 1000


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class RankingPredictor(kserve.Model):
    def __init__(self, model_dir: Path, features_dir: Path, device: str | None = None, name: str = "ranking"):
        super().__init__(name)
        self.model_dir, self.features_dir = Path(model_dir), Path(features_dir)
        self.device = torch.device(device or default_device())
        self.blend = torch.tensor([BLEND[h] for h in HEADS], device=self.device)

    def load(self) -> bool:
        model, user_emb = load_pinnability(self.model_dir)
        self.model, self.user_emb = model.to(self.device), user_emb.to(self.device)
        self.n_pins = self.model.content.table.shape[0] - 1  # the last row is the padding row
        self.store = FeatureStore(repo_path=str(self.features_dir))
        # the ready flag drives the readiness probe: set only once every dependency has opened
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        requests = self._parse(payload)
        users = request_users(self.store, [u for u, _ in requests], self.model.cfg.n_interests)
        interest_of = self._interests(requests)
        scorable = [[p for p in pins if p in interest_of] for _, pins in requests]
        user_row = np.repeat(np.arange(len(requests)), [len(pins) for pins in scorable])
        pin_ids = np.array([p for pins in scorable for p in pins], dtype=np.int64)
        probs, scores = self._score(
            users, user_row, pin_ids, np.array([interest_of[p] for p in pin_ids], dtype=np.int64)
        )
        predictions, start = [], 0
        for (user_id, pins), kept in zip(requests, scorable, strict=True):
            rows = range(start, start + len(kept))
            start += len(kept)
            ranked = sorted(rows, key=lambda r: (-scores[r], pin_ids[r]))  # ties by pin id: a stable order
            predictions.append(
                {
                    "user_id": user_id,
                    "scores": [_scored(pin_ids[r], probs[r], scores[r]) for r in ranked],
                    "unscored": [p for p in pins if p not in interest_of],
                }
            )
        return {"predictions": predictions}

    def _parse(self, payload) -> list[tuple[int, list[int]]]:
        n_users = self.user_emb.shape[0]
        return [
            (
                integer(instance, i, "user_id", 0, n_users),
                integer_list(instance, i, "candidates", 0, self.n_pins, max_len=MAX_CANDIDATES),
            )
            for i, instance in enumerate(v1_instances(payload, self.name))
        ]

    def _interests(self, requests: list[tuple[int, list[int]]]) -> dict[int, int]:
        """Interest id of every candidate the online store knows, from one read of the request's distinct pins."""
        distinct = sorted({p for _, pins in requests for p in pins})
        rows = online_pin_features(self.store, distinct)
        known = rows[rows["interest_id"].notna()]
        return dict(zip(known["pin_id"].tolist(), known["interest_id"].astype(int).tolist(), strict=True))

    @torch.inference_mode()
    def _score(self, users: OnlineUsers, user_row, pin_ids, interests) -> tuple[np.ndarray, np.ndarray]:
        """[N, 3] head probabilities and [N] blended scores for N (user, candidate) pairs in one forward pass."""
        if len(pin_ids) == 0:
            return np.zeros((0, len(HEADS)), dtype=np.float32), np.zeros(0, dtype=np.float32)
        row = torch.from_numpy(user_row).to(self.device)
        now_ms = np.full(len(users.user_id), time.time_ns() // 1_000_000, dtype=np.int64)

        def per_pair(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(x).to(self.device)[row]

        logits = self.model(
            segment=per_pair(users.segment),
            user_emb=self.user_emb[per_pair(users.user_id)],
            pin_ids=torch.from_numpy(pin_ids).to(self.device),
            interest=torch.from_numpy(interests).to(self.device),
            seq_pin_ids=per_pair(users.seq_pin_ids),
            seq_actions=per_pair(users.seq_actions),
            # the time-window mask's input; in eval mode the model does not read it, passed for one input contract
            seq_age_h=per_pair(sequence_age_hours(users.seq_ts, now_ms, users.seq_pin_ids >= 0)),
        )
        probs = torch.sigmoid(logits)
        return probs.cpu().numpy(), (probs @ self.blend).cpu().numpy()


def _scored(pin_id, probs: np.ndarray, score) -> dict:
    return {"pin_id": int(pin_id), **{h: float(p) for h, p in zip(HEADS, probs, strict=True)}, "score": float(score)}
