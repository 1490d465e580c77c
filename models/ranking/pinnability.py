"""Pinnability with a TransAct sequence module (seed 003), walking-skeleton version.

TransAct: per position, early fusion of [candidate pin emb, action emb, engaged pin emb]; a transformer encoder
(no positional encoding); output = first K tokens + a max-pooled token, flattened. Pinnability: that output with
user and pin features -> MLP -> heads for click, repin and hide. The paper's full module (time-window mask, DCN v2,
variants and ablations) is issue F5; inputs and outputs here are the ones it keeps. Plain torch only, so the
model runs on the GPU machine's torch build.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.layers import FrozenEmbedding, mlp

HEADS = ("click", "repin", "hide")
N_ACTION_CODES = 4  # contracts.ACTIONS; code 0 (impression) is the padding value in sequences


@dataclass
class PinnabilityConfig:
    n_interests: int
    n_segments: int = 4
    action_dim: int = 32
    n_layers: int = 2
    n_heads: int = 1
    ffn_dim: int = 32
    dropout: float = 0.1
    first_k: int = 10
    hidden: tuple[int, ...] = (128, 64)
    use_sequence: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class TransAct(nn.Module):
    """Inputs: cand [B, d] candidate pin embedding; seq_emb [B, L, d]; seq_actions [B, L] int (0 = padding).
    Output: [B, (first_k + 1) * (2d + action_dim)]."""

    def __init__(self, cfg: PinnabilityConfig, pin_dim: int):
        super().__init__()
        self.cfg = cfg
        self.action = nn.Embedding(N_ACTION_CODES, cfg.action_dim)
        d_model = 2 * pin_dim + cfg.action_dim
        layer = nn.TransformerEncoderLayer(
            d_model, cfg.n_heads, cfg.ffn_dim, cfg.dropout, batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.out_dim = (cfg.first_k + 1) * d_model

    def forward(self, cand, seq_emb, seq_actions) -> torch.Tensor:
        length = seq_emb.shape[1]
        fused = torch.cat([cand.unsqueeze(1).expand(-1, length, -1), self.action(seq_actions), seq_emb], dim=-1)
        pad = seq_actions == 0
        # a fully padded row would make attention produce NaN: keep its first position visible
        pad = pad & ~(pad.all(dim=1, keepdim=True) & (torch.arange(length, device=pad.device) == 0))
        h = self.encoder(fused, src_key_padding_mask=pad)
        h = h.masked_fill(pad.unsqueeze(-1), 0.0)
        first = h[:, : self.cfg.first_k]
        if first.shape[1] < self.cfg.first_k:
            first = nn.functional.pad(first, (0, 0, 0, self.cfg.first_k - first.shape[1]))
        pooled = h.masked_fill(pad.unsqueeze(-1), float("-inf")).max(dim=1).values
        pooled = torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))
        return torch.cat([first.flatten(1), pooled], dim=-1)


class Pinnability(nn.Module):
    """Inputs (batch B): segment [B]; user_emb [B, u] (pretrained user embedding); pin_ids [B]; interest [B];
    seq_pin_ids [B, L] (-1 padding); seq_actions [B, L]. Output: logits [B, 3] for click, repin, hide."""

    def __init__(self, cfg: PinnabilityConfig, content: torch.Tensor, user_dim: int):
        super().__init__()
        self.cfg = cfg
        self.content = FrozenEmbedding(content)
        d = self.content.dim
        self.segment = nn.Embedding(cfg.n_segments, 8)
        self.interest = nn.Embedding(cfg.n_interests, 16)
        self.transact = TransAct(cfg, d) if cfg.use_sequence else None
        seq_dim = self.transact.out_dim if self.transact else 0
        self.head = mlp(8 + user_dim + d + 16 + seq_dim, cfg.hidden, len(HEADS), dropout=0.1)

    def forward(self, segment, user_emb, pin_ids, interest, seq_pin_ids, seq_actions) -> torch.Tensor:
        cand = self.content(pin_ids)
        parts = [self.segment(segment), user_emb, cand, self.interest(interest)]
        if self.transact is not None:
            parts.append(self.transact(cand, self.content(seq_pin_ids), seq_actions))
        return self.head(torch.cat(parts, dim=-1))
