"""Pinnability, Homefeed's ranking model (seed 003): features + a user-action sequence module -> DCN v2 -> heads.

Features per (user, candidate) pair: a segment embedding, the pretrained user embedding (an input, PinnerSAGE's
stand-in), the candidate's content embedding, an interest embedding, and the output of the sequence module
(TransAct by default, any baseline of `models.ranking.sequence` for the paper's comparisons). They are concatenated
and crossed by DCN v2 over the full feature set (the paper affords it once TransAct v1.1 compressed its output),
then an MLP gives one logit per head (click, repin, hide): one model, several engagement predictions, blended
downstream.

Input contract of `Pinnability.forward` (B = pairs, L = sequence length, newest first; any L):
    segment     [B] int64        segment id in [0, n_segments)
    user_emb    [B, u] float32   pretrained user embedding (u = the model's user_dim)
    pin_ids     [B] int64        candidate pin id (row of the content table)
    interest    [B] int64        candidate interest id in [0, n_interests)
    seq_pin_ids [B, L] int64     engaged pin ids, -1 where empty (components.features.sequence.PAD_PIN)
    seq_actions [B, L] int64     contracts.ACTIONS codes, PAD_ACTION (0) where empty; padding is read from the pin id
    seq_age_h   [B, L] float32   hours between each action and the request, >= 0, anything where empty. Needed in
                                 training when the time-window mask is on; may be None in eval (it is unused there)
    generator   torch.Generator | None   draws the time windows in training
Output: logits [B, 3] in HEADS order.

`Pinnability.score_grouped` is the serving form of the same eval-mode function: per-user inputs once ([U, ...]) and
per-pair inputs with `user_row` ([B]), so nothing that depends on the user alone is computed once per candidate.

Plain torch only (no torchrec), so the model runs on the GPU machine's torch build.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import CrossNetV2, FrozenEmbedding, mlp
from models.ranking.sequence import SequenceConfig, grouped_sequence, make_sequence_module, model_actions
from models.schema import N_SEGMENTS

HEADS = ("click", "repin", "hide")
HEAD_WEIGHTS = {"click": 1.0, "repin": 2.0, "hide": 1.0}  # repin is the engagement the seed optimises for
# How the heads add up to the one score serving ranks by (and the offline HIT@3 of that served order). Repins
# (saves) are the engagement Homefeed optimises for, a click is a weaker sign of interest, and a hide is explicit
# negative feedback: it pulls a pin down as hard as a repin lifts it.
BLEND = {"repin": 1.0, "click": 0.5, "hide": -1.0}
STATE_FILE, CONFIG_FILE, PROGRAM_FILE = "model.pt", "config.json", "model.pt2"


@dataclass
class PinnabilityConfig:
    n_interests: int
    n_segments: int = N_SEGMENTS
    hidden: tuple[int, ...] = (128, 64)
    cross_layers: int = 2
    # Low-rank DCN v2 (rank of each cross layer's weight; None = full rank). Full rank over TransAct v1.1's
    # (10 + 1) x 96 outputs plus the other features is 2 x 1,144^2 = 2.6M weights and over v1.0's 100 x 96 about
    # 190M; rank 64 keeps the crossing of the full feature set at 2 x 2 x 64 x width.
    cross_rank: int | None = 64
    dropout: float = 0.1
    segment_dim: int = 8
    interest_dim: int = 16
    sequence: SequenceConfig = field(default_factory=SequenceConfig)

    def to_dict(self) -> dict:
        """JSON-ready: `sequence` becomes a nested dict, `hidden` a list once dumped."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PinnabilityConfig:
        data = dict(data)
        data.setdefault("cross_rank", None)  # configs written before the low-rank option were full rank
        data["hidden"] = tuple(data.get("hidden", cls.hidden))
        if isinstance(data.get("sequence"), dict):
            data["sequence"] = SequenceConfig(**data["sequence"])
        return cls(**data)


class Pinnability(nn.Module):
    """See the module docstring for the inputs; `content` [N, d] is the frozen pin content table."""

    def __init__(self, cfg: PinnabilityConfig, content: torch.Tensor, user_dim: int):
        super().__init__()
        self.cfg = cfg
        self.content = FrozenEmbedding(content)
        d = self.content.dim
        self.segment = nn.Embedding(cfg.n_segments, cfg.segment_dim)
        self.interest = nn.Embedding(cfg.n_interests, cfg.interest_dim)
        self.sequence = make_sequence_module(cfg.sequence, d)
        in_dim = cfg.segment_dim + user_dim + d + cfg.interest_dim + self.sequence.out_dim
        self.cross = CrossNetV2(in_dim, cfg.cross_layers, cfg.cross_rank)
        self.mlp = mlp(in_dim, cfg.hidden, len(HEADS), dropout=cfg.dropout)

    def forward(
        self,
        segment: torch.Tensor,
        user_emb: torch.Tensor,
        pin_ids: torch.Tensor,
        interest: torch.Tensor,
        seq_pin_ids: torch.Tensor,
        seq_actions: torch.Tensor,
        seq_age_h: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        cand = self.content(pin_ids)
        seq = self.sequence(
            cand, self.content(seq_pin_ids), model_actions(seq_pin_ids, seq_actions), seq_age_h, generator
        )
        x = torch.cat([self.segment(segment), user_emb, cand, self.interest(interest), seq], dim=-1)
        return self.mlp(self.cross(x))

    def score_grouped(
        self,
        segment: torch.Tensor,
        user_emb: torch.Tensor,
        seq_pin_ids: torch.Tensor,
        seq_actions: torch.Tensor,
        pin_ids: torch.Tensor,
        interest: torch.Tensor,
        user_row: torch.Tensor,
    ) -> torch.Tensor:
        """Eval-mode logits [B, 3] for B (user, candidate) pairs of U users, equal to `forward` on the inputs expanded
        per pair (segment[user_row], ...) up to float rounding.

        Per user (U rows): segment [U], user_emb [U, u], seq_pin_ids [U, L], seq_actions [U, L] (the data's padding).
        Per pair (B rows): pin_ids [B], interest [B], user_row [B] (index into the U users).

        A serving request is one user and up to 1,000 candidates: the segment and user embeddings, the sequence's
        content lookups, action codes and masks are computed once per user, and so is the whole sequence module when
        it ignores the candidate (everything but early-fusion TransAct); see `grouped_sequence`. Only the crossing
        and the MLP, which mix user and candidate features, always run per pair.
        Eval mode only: training draws the time-window mask and dropout per pair, which a shared per-user
        computation cannot reproduce.
        """
        if self.training:
            raise RuntimeError("score_grouped is eval-only (call model.eval()); training uses forward")
        cand = self.content(pin_ids)
        seq = grouped_sequence(
            self.sequence, cand, self.content(seq_pin_ids), model_actions(seq_pin_ids, seq_actions), user_row
        )
        per_user = torch.cat([self.segment(segment), user_emb], dim=-1)[user_row]
        x = torch.cat([per_user, cand, self.interest(interest), seq], dim=-1)
        return self.mlp(self.cross(x))


def head_loss(logits: torch.Tensor, labels: torch.Tensor, weights: dict[str, float] | None = None) -> torch.Tensor:
    """Weighted binary cross-entropy over the heads: mean over pairs and heads of w_head * BCE.

    That is (1 / n_heads) * sum_h w_h * mean_b BCE_bh, the trainer's loss so far, so learning rates carry over.
    """
    weights = HEAD_WEIGHTS if weights is None else weights
    w = torch.tensor([weights[h] for h in HEADS], dtype=logits.dtype, device=logits.device)
    return (F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none") * w).mean()


def export(model: Pinnability, path_dir: Path, program: bool = False) -> Path:
    """Write state_dict (model.pt, content table included) and config.json, the layout `load` and the trainer use.

    With `program`, also model.pt2: the eval-mode graph from `torch.export` (batch size dynamic, sequence length
    fixed at cfg.sequence.seq_len, the seven tensors positional, seq_age_h included), loadable with `torch.export.load(...).module()` without
    this code. Optional: serving can just as well rebuild the module with `load`.
    """
    path_dir = Path(path_dir)
    path_dir.mkdir(parents=True, exist_ok=True)
    core = model.module if hasattr(model, "module") else model  # unwrap DistributedDataParallel
    torch.save(core.state_dict(), path_dir / STATE_FILE)
    (path_dir / CONFIG_FILE).write_text(json.dumps(core.cfg.to_dict(), indent=2))
    if program:
        torch.export.save(_exported_program(core), path_dir / PROGRAM_FILE)
    return path_dir


def _exported_program(model: Pinnability) -> torch.export.ExportedProgram:
    was_training = model.training
    model.eval()  # the graph serves: no dropout, no time-window mask
    example = example_inputs(model, batch=2)  # 2, not 1: a size-1 example would be specialised
    batch = torch.export.Dim("batch", min=1)
    try:
        return torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example))
    finally:
        model.train(was_training)


def example_inputs(model: Pinnability, batch: int) -> tuple[torch.Tensor, ...]:
    """Positional inputs of the input contract (all-valid sequences of cfg.sequence.seq_len), for tracing."""
    length = model.cfg.sequence.seq_len
    device = model.content.table.device
    user_dim = model.mlp[0].in_features - (
        model.cfg.segment_dim + model.content.dim + model.cfg.interest_dim + model.sequence.out_dim
    )

    def ids() -> torch.Tensor:  # a fresh tensor per input: export would tie inputs that share one
        return torch.zeros(batch, dtype=torch.long, device=device)

    return (
        ids(),
        torch.zeros(batch, user_dim, device=device),
        ids(),
        ids(),
        torch.zeros(batch, length, dtype=torch.long, device=device),
        torch.ones(batch, length, dtype=torch.long, device=device),
        torch.full((batch, length), 48.0, device=device),
    )


def read_config(path_dir: Path) -> PinnabilityConfig:
    """The config `export` wrote, without loading the weights."""
    return PinnabilityConfig.from_dict(json.loads((Path(path_dir) / CONFIG_FILE).read_text()))


def load(path_dir: Path, map_location: str | torch.device = "cpu") -> Pinnability:
    """Rebuild from `export`'s files, in eval mode. The content table and user_dim come from the state dict."""
    path_dir = Path(path_dir)
    cfg = read_config(path_dir)
    state = torch.load(path_dir / STATE_FILE, map_location=map_location, weights_only=True)
    table = state["content.table"]
    d = table.shape[1]
    # the MLP's input width is the sum of the feature widths; all but the user embedding's follow from cfg and d
    others = cfg.segment_dim + d + cfg.interest_dim + make_sequence_module(cfg.sequence, d).out_dim
    model = Pinnability(cfg, torch.zeros(table.shape[0] - 1, d), state["mlp.0.weight"].shape[1] - others)
    model.load_state_dict(state)
    return model.eval()
