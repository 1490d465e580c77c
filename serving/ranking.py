"""The ranking predictor (GPU when there is one): Pinnability with the TransAct sequence scores each user's candidates.

Request (KServe v1 `POST /v1/models/ranking:predict`, or v2 `POST /v2/models/ranking/infer`, serving/v2.py):
    {"instances": [{"user_id": 7, "candidates": [12, 845, 3]}]}
    1..1000 distinct pin ids per user, at most MAX_PAIRS (user, candidate) pairs in all.
Response:
    {"predictions": [{"user_id": 7, "mode": "personalized", "reason": null, "unscored": [],
                      "scores": [{"pin_id", "click", "repin", "hide", "score"}, ...]}]}
    Per candidate the three head probabilities and their blend `score` (BLEND below); best score first.
    `unscored`: candidates outside the serving corpus (in request order). Retrieval serves from the same corpus
    version, so this is empty unless a client sends other pins; ranking says so instead of failing the request.

Inputs: the user's profile and full 100-action realtime sequence from the Feast online store (one read per
request); each candidate's interest from the serving corpus held in memory (serving/corpus.py: no per-candidate
Feast read) and its content embedding from the model's own table; the pretrained user embedding the model was
trained with (user_embeddings.npy in the model directory). One forward pass scores every (user, candidate) pair of
every instance, through serving/scorer.py: the user-only work (embeddings, the sequence gather, TransAct's
sequence half of its first projection) once per user, not once per candidate; bf16 and torch.compile on CUDA,
fp32 eager on CPU.

How each user is scored (`mode`):
    personalized  the model has the user's embedding and the store their profile;
    cold_start    a user the model or the store does not know: the mean user embedding stands in for an unknown
                  one, the `new` segment for a missing profile, and whatever realtime actions the stream processor
                  has pushed for them still count;
    degraded      the feature store could not be read: every user is ranked without the realtime sequence (and with
                  the `new` segment), and `reason` says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import kserve
import numpy as np
import torch
from kserve.errors import InvalidInput

from components.train.ranking import load_pinnability
from models.ranking.pinnability import BLEND, HEADS, PinnabilityConfig, read_config
from models.schema import N_SEGMENTS, SEQ_LEN
from serving import observe
from serving.corpus import ServingCorpus
from serving.online import OnlineUsers, online_users, open_store, without_features
from serving.payload import MAX_USER_ID, integer, integer_list, parse, respond
from serving.scorer import MAX_CANDIDATES, Scorer
from serving.v2 import Schema
from serving.worker import OffLoop

# (user, candidate) pairs per request. Memory is flat in the pairs (Scorer.score scores in passes), time is not: on
# the 2-core CPU this many took 12 s (the tiny world's model) to 49 s (the default-size model, a busy machine;
# bench/results/ranking_memory.md), which bounds how long one request holds the server.
MAX_PAIRS = 32_768
WARM_CANDIDATES = (200, MAX_CANDIDATES)  # the homefeed's default candidate count, and the most a request holds
SCHEMA = Schema(
    scalars=("user_id",),
    lists=("candidates",),
    table="scores",
    columns={"pin_id": "INT64", **{h: "FP32" for h in HEADS}, "score": "FP32"},
    values={"user_id": "INT64", "mode": "BYTES", "reason": "BYTES", "unscored": "INT64"},
)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_contract(cfg: PinnabilityConfig, model_dir: Path) -> None:
    """A ValueError at load for a model built for other sequences or segments than this server reads
    (models/schema.py): it would otherwise be fed sequences cut or padded to its length, or segment codes it
    never learnt, and answer without an error."""
    built = {"sequence length": cfg.sequence.seq_len, "segments": cfg.n_segments}
    served = {"sequence length": SEQ_LEN, "segments": N_SEGMENTS}
    wrong = [f"{name} {built[name]} (this server: {served[name]})" for name in built if built[name] != served[name]]
    if wrong:
        raise ValueError(f"{model_dir}: the ranking model was built for {', '.join(wrong)}; see models/schema.py")


class RankingPredictor(OffLoop, kserve.Model):
    """dtype: "auto" (bf16 on CUDA, fp32 on CPU), "fp32" or "bf16"; compile: torch.compile the scoring (default: on
    CUDA only, with CUDA graphs: measured 3.7x the eager fp32 throughput at 1,000 candidates on an H200, against
    1.7x without graphs, bench/results/ranking_serving.md). The first request of each new candidate-count bucket
    compiles; `WARM_CANDIDATES` compile at load."""

    def __init__(
        self,
        model_dir: Path,
        features_dir: Path,
        index_dir: Path,
        device: str | None = None,
        name: str = "ranking",
        dtype: str = "auto",
        compile: bool | None = None,
    ):
        super().__init__(name)
        self.model_dir, self.features_dir, self.index_dir = Path(model_dir), Path(features_dir), Path(index_dir)
        self.device = torch.device(device or default_device())
        self.dtype, self.compile = dtype, self.device.type == "cuda" if compile is None else compile
        self.blend = np.array([BLEND[h] for h in HEADS], dtype=np.float32)

    def load(self) -> bool:
        check_contract(read_config(self.model_dir), self.model_dir)  # before the weights, whose shapes follow it
        model, user_emb = load_pinnability(self.model_dir)
        mode = "reduce-overhead" if self.compile and self.device.type == "cuda" else None
        self.scorer = Scorer(model, self.device, self.dtype, compile=self.compile, grouped=True, compile_mode=mode)
        if self.compile or self.device.type == "cuda":  # compiles and CUDA's lazy init; eager CPU has neither
            self.scorer.warmup(WARM_CANDIDATES)
        self.model, self.user_emb = self.scorer.model, user_emb.to(self.device)
        # an unknown user is scored as the average known one: the centre of the space the model was trained on
        self.mean_user = self.user_emb.mean(dim=0)
        self.n_pins = self.model.content.table.shape[0] - 1  # the last row is the padding row
        self.corpus = ServingCorpus.load(self.index_dir)
        self.store = open_store(self.features_dir)
        # the ready flag drives the readiness probe: set only once every dependency has opened
        self.ready = True
        return self.ready

    def predict_now(self, payload, headers: dict[str, str] | None = None):
        started, rid = time.perf_counter(), observe.request_id(headers, payload)
        instances, as_v2 = parse(payload, SCHEMA)
        predictions = self.rank(self._parse(instances), rid)
        observe.answered(self.name, rid, [p["mode"] for p in predictions], started,
                         pairs=sum(len(p["scores"]) for p in predictions))  # fmt: skip
        return respond(predictions, self.name, rid, as_v2, SCHEMA)

    def rank(self, requests: list[tuple[int, list[int]]], rid: str = "-") -> list[dict]:
        ids, n_interests = [u for u, _ in requests], self.model.cfg.n_interests
        reason = None
        with observe.stage(self.name, "features"):
            try:
                users = online_users(self.store, ids, n_interests)
            except Exception as exc:  # noqa: BLE001 -- any failure of the store: rank without it, and say so
                observe.dependency_failed(self.name, "feast", rid, exc)
                users, reason = (
                    without_features(ids, n_interests),
                    "feature store unavailable: ranked without the realtime sequence",
                )
        modes = [
            "degraded" if reason else "personalized" if known and u < len(self.user_emb) else "cold_start"
            for u, known in zip(ids, users.known, strict=True)
        ]
        interest = [self.corpus.interest_of(np.asarray(pins)) for _, pins in requests]
        scorable = [
            np.asarray(pins, dtype=np.int64)[found >= 0] for (_, pins), found in zip(requests, interest, strict=True)
        ]
        user_row = np.repeat(np.arange(len(requests)), [len(p) for p in scorable])
        pin_ids = np.concatenate(scorable) if scorable else np.zeros(0, np.int64)
        with observe.stage(self.name, "rank"):
            probs, scores = self._score(users, user_row, pin_ids, np.concatenate([i[i >= 0] for i in interest]))
        predictions, start = [], 0
        for (user_id, pins), kept, found, mode in zip(requests, scorable, interest, modes, strict=True):
            rows = range(start, start + len(kept))
            start += len(kept)
            ranked = sorted(rows, key=lambda r: (-scores[r], pin_ids[r]))  # ties by pin id: a stable order
            predictions.append(
                {
                    "user_id": user_id,
                    "mode": mode,
                    "reason": reason,
                    "scores": [_scored(pin_ids[r], probs[r], scores[r]) for r in ranked],
                    "unscored": [p for p, f in zip(pins, found, strict=True) if f < 0],
                }
            )
        return predictions

    def _parse(self, instances: list[dict]) -> list[tuple[int, list[int]]]:
        parsed = [
            (
                integer(instance, i, "user_id", 0, MAX_USER_ID),
                integer_list(instance, i, "candidates", 0, self.n_pins, max_len=MAX_CANDIDATES),
            )
            for i, instance in enumerate(instances)
        ]
        pairs = sum(len(candidates) for _, candidates in parsed)
        if pairs > MAX_PAIRS:
            raise InvalidInput(f"candidates: {pairs} (user, candidate) pairs in one request, at most {MAX_PAIRS}; "
                               "split the batch")  # fmt: skip
        return parsed

    def _user_embeddings(self, users: OnlineUsers) -> torch.Tensor:
        """[U, u]: each user's pretrained embedding, the mean one for an id the model was not trained with."""
        ids = torch.from_numpy(users.user_id).to(self.device)
        trained = ids < len(self.user_emb)
        rows = self.user_emb[ids.clamp(max=len(self.user_emb) - 1)]
        return torch.where(trained.unsqueeze(1), rows, self.mean_user)

    def _score(self, users: OnlineUsers, user_row, pin_ids, interests) -> tuple[np.ndarray, np.ndarray]:
        """[N, 3] head probabilities and [N] blended scores for N (user, candidate) pairs in one forward pass."""
        with torch.inference_mode():
            user_emb = self._user_embeddings(users)
        probs = self.scorer.score(
            users.segment, user_emb, users.seq_pin_ids, users.seq_actions, pin_ids, interests, user_row
        )
        return probs, probs @ self.blend


def _scored(pin_id, probs: np.ndarray, score) -> dict:
    return {"pin_id": int(pin_id), **{h: float(p) for h, p in zip(HEADS, probs, strict=True)}, "score": float(score)}
