"""User-action sequence modules for Pinnability (seed 003): TransAct and the paper's baselines behind one interface.

(One module over 400 lines: the seven variants below are read side by side, as the paper's table compares them.)

Why one interface: the paper's offline table compares average pooling, CNN, RNN, LSTM, a vanilla transformer and
TransAct (v1.0 and v1.1) inside the same ranking model, and its ablations switch off the action embedding, the early
fusion and the random time-window mask one at a time. `make_sequence_module(SequenceConfig(kind=...), pin_dim)`
builds any of them, so the ranking model, its trainer and its evaluation are the same code for every row of that
table.

Input contract of every module (B = batch, L = sequence length, d = pin embedding size):
    cand        [B, d] float    the candidate pin's embedding
    seq_emb     [B, L, d] float the engaged pins' embeddings, newest first
    seq_actions [B, L] int64    action codes (contracts.ACTIONS order); PAD_INDEX (= N_ACTIONS) where empty
    seq_age_h   [B, L] float    hours between each action and the request (>= 0); ignored where empty
    generator   torch.Generator | None   draws the time windows (training only)
Output: [B, out_dim]; `out_dim` is an attribute (0 for kind "none").

Padding is PAD_INDEX, a code of its own: the data's sequences pad with action 0, the index of "impression", which
doubles as padding there because impressions never enter a sequence. The model does not rely on that: Pinnability
derives padding from the pin id (-1) and maps it to PAD_INDEX (`model_actions`), and the action table gives
PAD_INDEX its own row, so padding is distinct from every real action even if impressions one day enter sequences.

What the modules guarantee: padded positions are never read (not attended, not pooled, not convolved, not fed to
a recurrent cell), and a row without any valid action gives a finite output (zeros for the sequence part).

Serving scores one user's sequence against up to 1,000 candidates. `reads_candidate` (an attribute of every module)
says whether the output depends on `cand` at all; `grouped_sequence` uses it to run a module once per user instead of
once per (user, candidate) pair, and `TransAct.forward_grouped` shares what it can of early fusion's per-pair encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from models.schema import N_ACTIONS, PAD_INDEX, SEQ_LEN

KINDS = ("none", "avgpool", "cnn", "rnn", "lstm", "transformer", "transact_v10", "transact_v11")


@dataclass
class SequenceConfig:
    """Which sequence module to build, and TransAct's hyper-parameters (paper defaults).

    `action_embedding`, `early_fusion` and `time_window_mask` are the paper's ablations; they apply to the TransAct
    kinds only (the baselines see pin embeddings alone, as in the paper's comparison).
    """

    kind: str = "transact_v11"
    action_dim: int = 32
    n_layers: int = 2
    n_heads: int = 1
    ffn_dim: int = 32
    dropout: float = 0.1
    first_k: int = 10
    seq_len: int = SEQ_LEN
    action_embedding: bool = True
    early_fusion: bool = True
    time_window_mask: bool = True
    max_window_hours: float = 24.0
    # Share of training rows the mask applies to. The paper masks every row; on world:medium+intent (intents that
    # live inside a 45-minute visit) that hides the very actions that reveal the intent in almost every training
    # row. HIT@3 repin vs no sequence, 3 seeds (bench/results/ranking_eval_world_intent): every row -9.3%, a fifth
    # +10.0%, no mask +11.4%; concentration on the last action's interest 0.247, 0.302, 0.307. A one-off sweep on
    # the same data also tried half the rows (+6.1%) and 1 h / 6 h windows on half (+3.2% / +5.5%). A fifth keeps
    # most of the gain and some of the mask's effect; the table reports the paper's setting beside it.
    mask_probability: float = 0.2

    @property
    def variable_length(self) -> bool:
        """True when the output does not depend on how much trailing padding the input carries (every kind but
        v1.0, which flattens a fixed `seq_len` tokens), so callers may `trim_padding` batches first."""
        return self.kind != "transact_v10"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown sequence kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if not 0.0 <= self.mask_probability <= 1.0:
            raise ValueError(f"mask_probability must lie in [0, 1]; got {self.mask_probability}")


def model_actions(seq_pin_ids: torch.Tensor, seq_actions: torch.Tensor) -> torch.Tensor:
    """The data's (pin -1, action PAD_ACTION) padding -> the model's PAD_INDEX; real action codes unchanged.

    The pin id is the unambiguous padding signal: the data's padding action code is a real action's index.
    """
    return torch.where(seq_pin_ids < 0, torch.full_like(seq_actions, PAD_INDEX), seq_actions.long())


def trim_padding(seq_pin_ids: torch.Tensor, *aligned: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Cut the positions that are padding (pin id < 0) in every row of the batch, from the end.

    Sequences are newest first and padded at the end, and most users have far fewer than 100 actions; a module
    whose output ignores padding (`SequenceConfig.variable_length`) then computes the same output on a fraction of
    the positions. Shapes become data-dependent, so this belongs in eager training and scoring loops, not in an
    exported graph. At least one position is kept. `aligned` tensors ([B, L, ...] or None) are cut the same way.
    """
    valid = (seq_pin_ids >= 0).any(dim=0)
    length = max(int(valid.nonzero().max()) + 1, 1) if bool(valid.any()) else 1
    return (seq_pin_ids[:, :length], *(None if t is None else t[:, :length] for t in aligned))


def time_window_mask(
    valid: torch.Tensor,
    age_h: torch.Tensor,
    max_hours: float,
    generator: torch.Generator | None = None,
    probability: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TransAct's random time-window mask: per row draw w ~ U(0, max_hours), hide the valid actions younger than w.
    With `probability` p < 1 only a random share p of the rows is masked (the others get w = 0: nothing hidden).

    The paper masks actions from the last day at random so the model leans less on the very latest actions (which
    would make the feed too responsive and less diverse). A row whose every valid action falls inside its window is
    left unmasked: hiding everything would turn it into a no-history row, a different signal from "recent history
    hidden", and the paper says never to hide all. Rows without valid actions stay as they are.

    Args:
        valid: [B, L] bool, True where a real action is.
        age_h: [B, L] float, hours between the action and the request.
        generator: draws the windows; seeded, the masks are reproducible.
    Returns:
        (visible [B, L] bool, window [B] float hours).
    """
    device = generator.device if generator is not None else valid.device
    window = torch.rand(valid.shape[0], generator=generator, device=device) * max_hours
    if probability < 1.0:
        window = torch.where(torch.rand(valid.shape[0], generator=generator, device=device) < probability, window, 0.0)
    window = window.to(valid.device)
    hidden = valid & (age_h < window[:, None])
    visible = valid & ~hidden
    # never hide every action of a row: such rows keep all of them
    keep_all = ~visible.any(dim=1, keepdim=True)
    return torch.where(keep_all, valid, visible), window


def _fit_length(x: torch.Tensor, length: int, value=0) -> torch.Tensor:
    """Cut or right-pad dim 1 to `length` (newest first, so cutting keeps the newest)."""
    if x.shape[1] >= length:
        return x[:, :length]
    pad = [0, 0] * (x.dim() - 2) + [0, length - x.shape[1]]
    return nn.functional.pad(x, pad, value=value)


def _masked_max(h: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Max over the visible positions of [B, L, D]; zeros for a row with none."""
    pooled = h.masked_fill(~visible.unsqueeze(-1), float("-inf")).amax(dim=1)
    return pooled.masked_fill(~visible.any(dim=1, keepdim=True), 0.0)


class NoSequence(nn.Module):
    """The "without sequence" baseline every relative number of the paper is measured against."""

    reads_candidate = False  # the output is a function of the sequence alone

    out_dim = 0

    def forward(
        self,
        cand: torch.Tensor,
        seq_emb: torch.Tensor,
        seq_actions: torch.Tensor,
        seq_age_h: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return cand.new_zeros(cand.shape[0], 0)


class AvgPool(nn.Module):
    """Mean of the engaged pins' embeddings over the valid positions."""

    reads_candidate = False  # the output is a function of the sequence alone

    def __init__(self, pin_dim: int):
        super().__init__()
        self.out_dim = pin_dim

    def forward(
        self,
        cand: torch.Tensor,
        seq_emb: torch.Tensor,
        seq_actions: torch.Tensor,
        seq_age_h: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        valid = (seq_actions != PAD_INDEX).unsqueeze(-1)
        total = seq_emb.masked_fill(~valid, 0.0).sum(dim=1)
        return total / valid.sum(dim=1).clamp(min=1)


class ConvPool(nn.Module):
    """A 1-D convolution along the sequence (local patterns of neighbouring actions), then max-pool over valid ones.

    Padded inputs are zeroed before the convolution, so a valid position next to padding reads zeros (the same as
    the convolution's own edge padding), never the padded embeddings.
    """

    reads_candidate = False  # the output is a function of the sequence alone

    def __init__(self, pin_dim: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(pin_dim, pin_dim, kernel, padding=kernel // 2)
        self.out_dim = pin_dim

    def forward(
        self,
        cand: torch.Tensor,
        seq_emb: torch.Tensor,
        seq_actions: torch.Tensor,
        seq_age_h: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        valid = seq_actions != PAD_INDEX
        x = seq_emb.masked_fill(~valid.unsqueeze(-1), 0.0)
        h = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return _masked_max(h, valid)


class Recurrent(nn.Module):
    """RNN or LSTM over the valid actions, oldest to newest; output = the hidden state after the newest one.

    The valid positions are gathered oldest first and left-aligned; the cell is causal, so its output at step n-1
    (n = the row's valid count) has read exactly the valid actions and no padding.
    """

    reads_candidate = False  # the output is a function of the sequence alone

    def __init__(self, pin_dim: int, cell: str):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.RNN
        self.rnn = rnn(pin_dim, pin_dim, batch_first=True)
        self.out_dim = pin_dim

    def forward(
        self,
        cand: torch.Tensor,
        seq_emb: torch.Tensor,
        seq_actions: torch.Tensor,
        seq_age_h: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        valid = seq_actions != PAD_INDEX
        length = valid.shape[1]
        positions = torch.arange(length, device=valid.device).expand_as(valid)
        # valid positions first, newest first (stable): robust to gaps, not only to a padded tail
        newest_first = torch.argsort(torch.where(valid, positions, positions + length), dim=1)
        n = valid.sum(dim=1, keepdim=True)
        oldest_first = newest_first.gather(1, (n - 1 - positions).clamp(min=0))
        x = seq_emb.gather(1, oldest_first.unsqueeze(-1).expand(-1, -1, seq_emb.shape[-1]))
        out, _ = self.rnn(x)
        last = out.gather(1, (n - 1).clamp(min=0).unsqueeze(-1).expand(-1, 1, out.shape[-1])).squeeze(1)
        return last.masked_fill(n == 0, 0.0)


class TransAct(nn.Module):
    """TransAct: per position [candidate emb, action emb, engaged pin emb] -> transformer encoder -> output tokens.

    Early fusion lets attention weigh each past action by its relation to the candidate (the paper's largest gain);
    no positional encoding (the paper uses none: order enters through the first-K output tokens, which are the K
    newest). Output v1.1: the first K tokens (recent intent) + one max-pooled token (longer-term preference),
    flattened, (K + 1) * d_model; v1.0: all `seq_len` tokens flattened. Padding and time-window-masked actions are
    excluded from attention and zeroed before the output; the vanilla-transformer baseline is this module with no
    action embedding, no early fusion and no time-window mask (v1.1 reduction).
    """

    def __init__(self, cfg: SequenceConfig, pin_dim: int, version: str = "v11"):
        super().__init__()
        self.cfg, self.version = cfg, version
        self.action = None
        if cfg.action_embedding:
            self.action = nn.Embedding(N_ACTIONS + 1, cfg.action_dim, padding_idx=PAD_INDEX)
            # Rows of unit expected norm, the scale of the (unit) pin embeddings they sit beside: at nn.Embedding's
            # N(0, 1) init a 32-d action vector is ~6x longer than a pin vector, dominates the encoder's LayerNorm
            # and drowns the candidate-vs-engaged-pin signal (measured on world:tiny+intent: v1.1 at -3% vs no
            # sequence with N(0, 1) rows, +20% with these).
            nn.init.normal_(self.action.weight, std=cfg.action_dim**-0.5)
            with torch.no_grad():
                self.action.weight[PAD_INDEX].zero_()
        self.d_model = pin_dim * (2 if cfg.early_fusion else 1) + (cfg.action_dim if cfg.action_embedding else 0)
        layer = nn.TransformerEncoderLayer(self.d_model, cfg.n_heads, cfg.ffn_dim, cfg.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        n_tokens = cfg.first_k + 1 if version == "v11" else cfg.seq_len
        self.out_dim = n_tokens * self.d_model

    def visible(self, seq_actions, seq_age_h, generator=None) -> torch.Tensor:
        """[B, L] bool: the valid actions, less those the time-window mask hides (training only)."""
        valid = seq_actions != PAD_INDEX
        if not (self.training and self.cfg.time_window_mask):
            return valid
        if seq_age_h is None:
            raise ValueError("the time-window mask needs seq_age_h in training (or time_window_mask=False)")
        cfg = self.cfg
        return time_window_mask(valid, seq_age_h, cfg.max_window_hours, generator, cfg.mask_probability)[0]

    @property
    def reads_candidate(self) -> bool:
        """Only early fusion puts the candidate into the tokens; without it the encoder sees the sequence alone."""
        return self.cfg.early_fusion

    def sequence_tokens(self, seq_emb, seq_actions) -> torch.Tensor:
        """The candidate-independent part of every token: [action emb, engaged pin emb] (or the pin emb alone)."""
        parts = [] if self.action is None else [self.action(seq_actions)]
        return torch.cat([*parts, seq_emb], dim=-1)

    def tokens(self, cand, seq_emb, seq_actions) -> torch.Tensor:
        rest = self.sequence_tokens(seq_emb, seq_actions)
        if not self.cfg.early_fusion:
            return rest
        return torch.cat([cand.unsqueeze(1).expand(-1, seq_emb.shape[1], -1), rest], dim=-1)

    def fit_length(self, seq_emb, seq_actions, seq_age_h=None):
        """v1.0 flattens a fixed number of tokens, so its inputs are cut or padded to seq_len; v1.1 takes any L."""
        if self.version != "v10":
            return seq_emb, seq_actions, seq_age_h
        length = self.cfg.seq_len
        age = None if seq_age_h is None else _fit_length(seq_age_h, length)
        return _fit_length(seq_emb, length), _fit_length(seq_actions, length, PAD_INDEX), age

    def readout(self, h, visible) -> torch.Tensor:
        """Encoder output [B, L, D] -> the module output: hidden positions zeroed, then v1.0 / v1.1 reduction."""
        hidden = ~visible
        h = h.masked_fill(hidden.unsqueeze(-1), 0.0)
        if self.version == "v10":
            return h.flatten(1)
        first = _fit_length(h[:, : self.cfg.first_k], self.cfg.first_k)
        return torch.cat([first.flatten(1), _masked_max(h, visible)], dim=-1)

    def forward(
        self,
        cand: torch.Tensor,
        seq_emb: torch.Tensor,
        seq_actions: torch.Tensor,
        seq_age_h: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        seq_emb, seq_actions, seq_age_h = self.fit_length(seq_emb, seq_actions, seq_age_h)
        visible = self.visible(seq_actions, seq_age_h, generator)
        h = self.encoder(self.tokens(cand, seq_emb, seq_actions), src_key_padding_mask=_attention_padding(visible))
        return self.readout(h, visible)

    def forward_grouped(self, cand, seq_emb, seq_actions, user_row) -> torch.Tensor:
        """Eval-mode output for B pairs from per-user sequences, equal to
        `forward(cand, seq_emb[user_row], seq_actions[user_row])` up to float rounding.

        cand [B, d] per pair; seq_emb [U, L, d] and seq_actions [U, L] per user; user_row [B] in [0, U).
        The sequence tokens, the visibility and padding masks are built once per user. With early fusion every
        encoder position still depends on the candidate, so the encoder runs per pair; but its first operation, the
        Q/K/V projection, is linear, so the sequence tokens' share of it is computed once per user as well and only
        the candidate's share (one vector per pair, not per position) is added by broadcast (`_split_first_layer`).
        """
        if self.training:
            raise RuntimeError("forward_grouped is eval-only (training draws a time-window mask per pair)")
        seq_emb, seq_actions, _ = self.fit_length(seq_emb, seq_actions)
        visible = seq_actions != PAD_INDEX  # eval mode: no time-window mask
        rest = self.sequence_tokens(seq_emb, seq_actions)  # [U, L, D - d]
        if not self.reads_candidate:
            h = self.encoder(rest, src_key_padding_mask=_attention_padding(visible))
            return self.readout(h, visible)[user_row]
        pad = _attention_padding(visible)[user_row]
        layers = list(self.encoder.layers)
        if _splittable(layers[0]):
            h = _split_first_layer(layers[0], cand, rest, user_row, pad)
            layers = layers[1:]
        else:  # a layer variant whose first op is not the bare projection (e.g. norm_first): no sharing
            h = torch.cat([cand.unsqueeze(1).expand(-1, rest.shape[1], -1), rest[user_row]], dim=-1)
        for layer in layers:
            h = layer(h, src_key_padding_mask=pad)
        if self.encoder.norm is not None:
            h = self.encoder.norm(h)
        return self.readout(h, visible[user_row])


def _attention_padding(visible: torch.Tensor) -> torch.Tensor:
    """[B, L] key padding mask (True = not attended) from the visible positions.

    A row with nothing visible would give attention an all -inf row (NaN): it attends everywhere instead; its
    tokens are zeroed by `TransAct.readout`, so what they attended to never reaches the output.
    """
    hidden = ~visible
    return hidden & ~hidden.all(dim=1, keepdim=True)


def _splittable(layer: nn.Module) -> bool:
    """True when `_split_first_layer` reproduces `layer` exactly: a post-norm nn.TransformerEncoderLayer whose
    attention starts with one packed Q/K/V projection of its input (no bias_k / zero-attention extras)."""
    if type(layer) is not nn.TransformerEncoderLayer or layer.norm_first:
        return False
    attn = layer.self_attn
    return attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn


def _split_first_layer(layer, cand, rest, user_row, key_padding) -> torch.Tensor:
    """`layer(cat([cand over L, rest[user_row]]), src_key_padding_mask=key_padding)` in eval mode, with the rest's
    share of the Q/K/V projection computed once per user.

    W [cand; r] + b = W_c cand + (W_r r + b): per user [U, L, 3D] for the sequence part, per pair [B, 3D] for the
    candidate (constant over positions), summed by broadcast. The rest of the layer follows
    nn.TransformerEncoderLayer's post-norm path: x = norm1(x + SA(x)); x = norm2(x + FF(x)).
    """
    attn = layer.self_attn
    d_cand = cand.shape[-1]
    weight = attn.in_proj_weight
    qkv = F.linear(rest, weight[:, d_cand:], attn.in_proj_bias)[user_row]  # gather makes a fresh per-pair tensor
    qkv += F.linear(cand, weight[:, :d_cand]).unsqueeze(1)
    x = torch.cat([cand.unsqueeze(1).expand(-1, rest.shape[1], -1), rest[user_row]], dim=-1)  # the residual input
    x = layer.norm1(x + layer.dropout1(_packed_attention(qkv, key_padding, attn)))
    ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))
    return layer.norm2(x + layer.dropout2(ff))


def _packed_attention(qkv: torch.Tensor, key_padding: torch.Tensor, attn: nn.MultiheadAttention) -> torch.Tensor:
    """Multi-head attention from packed projections [B, L, 3D], as nn.MultiheadAttention computes it (eval mode):
    the boolean key padding mask becomes an additive -inf mask, scaled dot product per head, out projection."""
    batch, length = qkv.shape[:2]
    heads = attn.num_heads
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    mask = torch.zeros(key_padding.shape, dtype=q.dtype, device=q.device).masked_fill(key_padding, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    return attn.out_proj(out.transpose(1, 2).reshape(batch, length, -1))


def grouped_sequence(module: nn.Module, cand, seq_emb, seq_actions, user_row) -> torch.Tensor:
    """Eval-mode module output for B pairs from U users' sequences: `module(cand, seq_emb[user_row], ...)`.

    A module that ignores the candidate runs once per user and its output is expanded by index; early-fusion
    TransAct shares what it can per user (`TransAct.forward_grouped`).
    """
    if module.training:
        raise RuntimeError("grouped scoring is eval-only")
    if module.reads_candidate:
        return module.forward_grouped(cand, seq_emb, seq_actions, user_row)
    no_cand = seq_emb.new_zeros(seq_emb.shape[0], seq_emb.shape[-1])  # never read: a per-user stand-in
    return module(no_cand, seq_emb, seq_actions)[user_row]


def make_sequence_module(cfg: SequenceConfig, pin_dim: int) -> nn.Module:
    """The module for `cfg.kind`; every one has `out_dim` and the forward signature of the module docstring."""
    if cfg.kind == "none":
        return NoSequence()
    if cfg.kind == "avgpool":
        return AvgPool(pin_dim)
    if cfg.kind == "cnn":
        return ConvPool(pin_dim)
    if cfg.kind in ("rnn", "lstm"):
        return Recurrent(pin_dim, cfg.kind)
    if cfg.kind == "transformer":
        plain = replace(cfg, kind="transact_v11", action_embedding=False, early_fusion=False, time_window_mask=False)
        return TransAct(plain, pin_dim, "v11")
    return TransAct(cfg, pin_dim, "v10" if cfg.kind == "transact_v10" else "v11")
