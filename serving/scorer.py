"""Pinnability scoring for serving: device placement, bf16, torch.compile and once-per-user (grouped) computation.

`Scorer(model, device, dtype, compile, grouped).score(...)` takes one request's users and (user, candidate) pairs
as host arrays and returns the head probabilities on the host:

    per user (U):  segment [U] int64, user_emb [U, u] float, seq_pin_ids [U, L] int64 (-1 = empty),
                   seq_actions [U, L] int64 (the data's padding where empty)
    per pair (B):  pin_ids [B] int64, interest [B] int64, user_row [B] int64 (index into the U users)
    -> probs [B, len(HEADS)] float32 numpy, sigmoid of the logits taken in fp32

`grouped=True` calls `Pinnability.score_grouped` (user-only work once per user); `grouped=False` expands every
per-user input to the pairs and calls `forward`, which is what serving did before and the baseline the benchmark
compares against. Only torch and numpy: this module runs on the GPU machine, which has neither feast nor kserve.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from models.ranking.pinnability import HEADS, Pinnability
from models.schema import PAD_ACTION, PAD_PIN

DTYPES = ("auto", "fp32", "bf16")
MAX_CANDIDATES = 1000  # the most candidates one ranking request may hold per user (serving/ranking.py's limit)
# Pair-count buckets under torch.compile: powers of two below 128, then multiples of 128 (waste < 128 pairs, 11
# buckets up to 1,024), then multiples of 1,024 for multi-user requests.
SMALL_BUCKET, STEP, LARGE_STEP = 16, 128, 1024
# The most pairs one forward pass scores; a request with more is scored in passes of this many (Scorer.score), so
# memory stays flat however large the request. Multiples of LARGE_STEP: a full pass is exactly one compile bucket.
# Measured on the 2-core CPU (bench/results/ranking_memory.md, the default model): a 32 x 1,000 request peaked at
# 14.0 GB in one pass and 0.88 GB in passes of 1,024, at about the same time. On CUDA, bigger passes keep the GPU
# busy.
PASS_PAIRS = {"cpu": 1024, "cuda": 8192}
RECOMPILE_LIMIT = 64  # dynamo's default (8) is below the number of buckets one scorer may meet


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """ "auto" is bf16 on CUDA and fp32 elsewhere; bf16 is refused off CUDA (CPU bf16 matmuls are slow and the
    serving target is the GPU)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if dtype == "auto":
        dtype = "bf16" if device.type == "cuda" else "fp32"
    if dtype == "bf16" and device.type != "cuda":
        raise ValueError(f"bf16 scoring needs a CUDA device; got {device}")
    return torch.bfloat16 if dtype == "bf16" else torch.float32


def pair_bucket(n: int) -> int:
    """The padded pair count for n pairs (see the bucket constants)."""
    if n <= STEP:
        return max(SMALL_BUCKET, 1 << (max(n, 1) - 1).bit_length())
    step = STEP if n <= LARGE_STEP else LARGE_STEP
    return -(-n // step) * step


def user_bucket(n: int) -> int:
    """The padded user count: the next power of two (requests carry few users; one in the common case)."""
    return 1 << (max(n, 1) - 1).bit_length()


def user_dim(model: Pinnability) -> int:
    """Width of the pretrained user embedding: the MLP input less every other feature's width."""
    cfg = model.cfg
    others = cfg.segment_dim + model.content.dim + cfg.interest_dim + model.sequence.out_dim
    return model.mlp[0].in_features - others


class Scorer:
    """Scores requests with a private copy of `model`, in eval mode, on `device`, in `dtype`.

    dtype: "fp32", "bf16" (CUDA only; parameters and the content table are cast, so the table lookups gather bf16
    rows exactly and nothing is converted per request) or "auto" (bf16 on CUDA, fp32 on CPU).
    compile: wrap the scoring function in `torch.compile(dynamic=False)`. Candidate counts vary per request, so
    inputs are padded to buckets (`pair_bucket`, `user_bucket`, sequences to at least cfg.sequence.seq_len) and
    every bucket compiles once: a bounded set of static-shape graphs. Static shapes let inductor specialise its
    kernels and matmul choices to the sizes served; symbolic shapes would compile once but give up that
    specialisation, and padding wastes under 128 pairs (2.4% at 1,000 candidates). Padded pairs read the content
    table's zero row and user 0; padded users have empty sequences; their outputs are dropped.
    compile_mode: torch.compile's mode; "reduce-overhead" also captures each bucket in a CUDA graph, which replays
    the whole forward as one launch (a request of 1,000 candidates is small enough for launches to dominate).
    grouped: `Pinnability.score_grouped` (True) or per-pair expansion + `forward` (False).
    The model is deep-copied: casting or moving it in place would change the caller's module.
    """

    def __init__(
        self,
        model: Pinnability,
        device: str | torch.device = "cpu",
        dtype: str = "auto",
        compile: bool = False,
        grouped: bool = True,
        compile_mode: str | None = None,
    ):
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = copy.deepcopy(model).eval().to(device=self.device, dtype=self.dtype)
        self.grouped, self.compiled = grouped, compile
        self.seq_len = self.model.cfg.sequence.seq_len
        self.pass_pairs = PASS_PAIRS["cuda" if self.device.type == "cuda" else "cpu"]
        logits = self._grouped_logits if grouped else self._pairwise_logits
        if compile:
            _allow_recompiles(RECOMPILE_LIMIT)
            logits = torch.compile(logits, dynamic=False, mode=compile_mode)
        self._logits = logits

    def _grouped_logits(self, segment, user_emb, seq_pin_ids, seq_actions, pin_ids, interest, user_row):
        return self.model.score_grouped(segment, user_emb, seq_pin_ids, seq_actions, pin_ids, interest, user_row)

    def _pairwise_logits(self, segment, user_emb, seq_pin_ids, seq_actions, pin_ids, interest, user_row):
        # the pre-grouping serving path: every per-user tensor expanded to the pairs on the device
        return self.model(
            segment[user_row], user_emb[user_row], pin_ids, interest, seq_pin_ids[user_row], seq_actions[user_row]
        )

    def score(self, segment, user_emb, seq_pin_ids, seq_actions, pin_ids, interest, user_row) -> np.ndarray:
        """Head probabilities [B, len(HEADS)] float32 for the B pairs (inputs: numpy arrays or CPU tensors), in
        passes of at most `pass_pairs` pairs: activations grow with the pairs of one pass (TransAct fuses each
        candidate into the user's whole sequence), so a large request is scored in flat memory."""
        if len(pin_ids) <= self.pass_pairs:
            return self._score_pass(segment, user_emb, seq_pin_ids, seq_actions, pin_ids, interest, user_row)
        user_row = np.asarray(user_row)
        per_user = [np.asarray(x) for x in (segment, user_emb, seq_pin_ids, seq_actions)]
        out = []
        for start in range(0, len(pin_ids), self.pass_pairs):
            rows = slice(start, start + self.pass_pairs)
            users, local_row = np.unique(user_row[rows], return_inverse=True)
            out.append(
                self._score_pass(
                    *(x[users] for x in per_user), np.asarray(pin_ids)[rows], np.asarray(interest)[rows], local_row
                )  # fmt: skip
            )
        return np.concatenate(out)

    def _score_pass(self, segment, user_emb, seq_pin_ids, seq_actions, pin_ids, interest, user_row) -> np.ndarray:
        n_pairs = len(pin_ids)
        if n_pairs == 0:
            return np.zeros((0, len(HEADS)), dtype=np.float32)
        with torch.inference_mode():
            users = [self._tensor(x) for x in (segment, user_emb, seq_pin_ids, seq_actions)]
            pairs = [self._tensor(x) for x in (pin_ids, interest, user_row)]
            if self.compiled:
                users, pairs = self._pad_users(*users), self._pad_pairs(*pairs)
            logits = self._logits(*users, *pairs)[:n_pairs]
            # the sigmoid in fp32: bf16 keeps ~3 significant digits, too coarse near 0 and 1 for ranking ties
            return torch.sigmoid(logits.float()).cpu().numpy()

    def warmup(
        self, pair_counts: Sequence[int] | None = None, n_users: int = 1, seq_len: int | None = None, repeats: int = 2
    ) -> None:
        """Score synthetic requests of every shape to come, so compilation (and CUDA's lazy init, cuBLAS handles,
        allocator growth) happens before the first real request. Default pair counts: every compile bucket up to
        MAX_CANDIDATES when compiled, MAX_CANDIDATES alone in eager mode."""
        if pair_counts is None:
            pair_counts = (
                sorted({pair_bucket(n) for n in range(1, MAX_CANDIDATES + 1)}) if self.compiled else [MAX_CANDIDATES]
            )
        rng = np.random.default_rng(0)
        for n_pairs in pair_counts:
            request = synthetic_request(self.model, n_pairs, n_users, seq_len or self.seq_len, rng)
            for _ in range(repeats):
                self.score(*request)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _tensor(self, x) -> torch.Tensor:
        t = torch.as_tensor(x).to(self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    def _pad_users(self, segment, user_emb, seq_pin_ids, seq_actions):
        n_users, length = seq_pin_ids.shape
        extra_users = user_bucket(n_users) - n_users
        extra_len = max(length, self.seq_len) - length
        seq_pin_ids = _pad(_pad(seq_pin_ids, extra_len, PAD_PIN, dim=1), extra_users, PAD_PIN)
        seq_actions = _pad(_pad(seq_actions, extra_len, PAD_ACTION, dim=1), extra_users, PAD_ACTION)
        return _pad(segment, extra_users, 0), _pad(user_emb, extra_users, 0.0), seq_pin_ids, seq_actions

    def _pad_pairs(self, pin_ids, interest, user_row):
        extra = pair_bucket(len(pin_ids)) - len(pin_ids)
        return _pad(pin_ids, extra, PAD_PIN), _pad(interest, extra, 0), _pad(user_row, extra, 0)


def synthetic_request(model: Pinnability, n_pairs: int, n_users: int, seq_len: int, rng: np.random.Generator):
    """Random positional inputs of `Scorer.score`: full sequences, pairs split evenly over the users."""
    n_pins = model.content.table.shape[0] - 1  # the last row is the padding row
    return (
        rng.integers(0, model.cfg.n_segments, n_users),
        rng.standard_normal((n_users, user_dim(model)), dtype=np.float32),
        rng.integers(0, n_pins, (n_users, seq_len)),
        rng.integers(1, 4, (n_users, seq_len)),  # real action codes (0 is the padding code)
        rng.integers(0, n_pins, n_pairs),
        rng.integers(0, model.cfg.n_interests, n_pairs),
        np.sort(np.arange(n_pairs) % n_users),
    )


def _pad(x: torch.Tensor, extra: int, value, dim: int = 0) -> torch.Tensor:
    """Append `extra` entries filled with `value` along `dim`."""
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, torch.full(shape, value, dtype=x.dtype, device=x.device)], dim=dim)


def _allow_recompiles(limit: int) -> None:
    """Raise dynamo's per-function recompile limit to `limit` (a process-wide setting; never lowered). The name
    changed across torch releases (cache_size_limit -> recompile_limit)."""
    import torch._dynamo  # loaded on first use of torch.compile anyway; explicit for older releases

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))
            return
