"""The torch modules behind the text model configs (imports torch).

Every module's forward takes `(tokens [batch, seq], lengths [batch])` with right padding
and never lets padding change a text's result: a padded batch gives each text exactly
what it would get alone (the tests check this for every model).

RNNs keep padding out in one of two exact ways. Packed sequences (`pack_padded_sequence`)
skip it, but cannot be traced or exported, and on the CPU they run a step-by-step loop
instead of oneDNN's fused kernel. The masked path runs each direction once over the padded
batch: the forward direction reads the right-padded batch as it is (padding comes after
every text, so it never reaches a text's outputs), the backward direction reads each text
reversed within its length (padding still comes last) and its outputs are reversed back.
Exported files always compute the masked path; `pack: auto` trains with it on the CPU and
packed on CUDA (cuDNN), and the export stage checks the exported file against the eager
model either way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchkiln.data.info import DatasetInfo


def exporting() -> bool:
    """True while torch.jit traces or torch.export captures the module."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    return bool(torch.compiler.is_exporting())


def valid_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[batch, size] booleans: position < length."""
    positions = torch.arange(size, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first `length` positions in reverse order; padding stays where it is."""
    positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    ends = lengths.unsqueeze(1).to(positions.device)
    index = torch.where(positions < ends, ends - 1 - positions, positions)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def one_direction(layer: nn.Module, x: torch.Tensor, reverse: bool) -> torch.Tensor:
    """One direction of a single-layer (bi)directional RNN/LSTM/GRU module over `x`,
    batch first, from zero states: the module's own kernel and weights, one pass."""
    suffix = "_reverse" if reverse else ""
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if layer.bias else [])
    weights = [getattr(layer, name + suffix) for name in names]
    zeros = x.new_zeros(1, x.shape[0], layer.hidden_size)
    args = (weights, layer.bias, 1, 0.0, layer.training, False, True)
    if isinstance(layer, nn.LSTM):
        return torch.lstm(x, (zeros, zeros), *args)[0]
    if isinstance(layer, nn.GRU):
        return torch.gru(x, zeros, *args)[0]
    run = torch.rnn_tanh if layer.nonlinearity == "tanh" else torch.rnn_relu
    return run(x, zeros, *args)[0]


def _embedding(info: DatasetInfo, dim: int) -> nn.Embedding:
    extra = info.extra
    return nn.Embedding(int(extra["vocab_size"]), dim, padding_idx=int(extra["pad_index"]))


class EmbeddingBagNet(nn.Module):
    """Mean of token (and hashed bigram) vectors -> [hidden] -> classes (fastText)."""

    BIGRAM_PRIME = 1_000_003

    def __init__(self, cfg: Any, info: DatasetInfo) -> None:
        super().__init__()
        dim = cfg.embedding_dim
        self.embedding = _embedding(info, dim)
        self.bigram_buckets = cfg.bigram_buckets
        self.bigrams = nn.Embedding(cfg.bigram_buckets, dim) if cfg.bigram_buckets else None
        self.dropout = nn.Dropout(cfg.dropout)
        layers: list[nn.Module] = []
        if cfg.hidden:
            layers += [nn.Linear(dim, cfg.hidden), nn.ReLU()]
            dim = cfg.hidden
        self.head = nn.Sequential(*layers, nn.Linear(dim, info.num_classes))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = valid_mask(lengths, tokens.shape[1]).unsqueeze(-1)
        total = (self.embedding(tokens) * keep).sum(1)
        count = lengths
        if self.bigrams is not None:
            ids = (tokens[:, :-1] * self.BIGRAM_PRIME + tokens[:, 1:]) % self.bigram_buckets
            pairs = (lengths - 1).clamp(min=0)
            keep2 = valid_mask(pairs, ids.shape[1]).unsqueeze(-1)
            total = total + (self.bigrams(ids) * keep2).sum(1)
            count = count + pairs
        mean = total / count.clamp(min=1).unsqueeze(1).to(total.dtype)
        return self.head(self.dropout(mean))


_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RnnNet(nn.Module):
    """Embedding -> stacked (bi)directional RNN/LSTM/GRU layers -> pooling -> linear."""

    def __init__(self, cfg: Any, info: DatasetInfo) -> None:
        super().__init__()
        self.embedding = _embedding(info, cfg.embedding_dim)
        directions = 2 if cfg.bidirectional else 1
        width = cfg.embedding_dim
        layers = []
        for _ in range(cfg.layers):
            # One module per layer (not num_layers=N) so the export path can run each
            # layer's directions separately; the state dict stays standard per layer.
            layers.append(
                _CELLS[cfg.cell](
                    width, cfg.hidden_size, batch_first=True, bidirectional=cfg.bidirectional
                )
            )
            width = cfg.hidden_size * directions
        self.encoder = nn.ModuleList(layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(width, info.num_classes)
        self.hidden_size = cfg.hidden_size
        self.bidirectional = cfg.bidirectional
        self.pooling = cfg.pooling
        self.pack = cfg.pack

    def _packed(self, layer: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = layer(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out

    def _masked(self, layer: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.bidirectional:
            return layer(x)[0]  # exact: padding comes after the text
        forward = one_direction(layer, x, reverse=False)
        backward = one_direction(layer, reverse_within(x, lengths), reverse=True)
        return torch.cat([forward, reverse_within(backward, lengths)], dim=-1)

    def packs(self, device: torch.device) -> bool:
        """Whether this forward pass runs packed sequences (see the module docstring)."""
        if exporting():
            return False
        return device.type == "cuda" if self.pack == "auto" else bool(self.pack)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-position outputs [batch, seq, directions * hidden]; padding positions are
        meaningless (pooling masks them)."""
        x = self.dropout(self.embedding(tokens))
        packed = self.packs(tokens.device)
        for i, layer in enumerate(self.encoder):
            if i:
                x = self.dropout(x)
            x = self._packed(layer, x, lengths) if packed else self._masked(layer, x, lengths)
        return x

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.encode(tokens, lengths)
        if self.pooling == "last":
            last = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, x.shape[2])
            pooled = x.gather(1, last).squeeze(1)
            if self.bidirectional:  # the backward direction ends at position 0
                h = self.hidden_size
                pooled = torch.cat([pooled[:, :h], x[:, 0, h:]], dim=-1)
        else:
            keep = valid_mask(lengths, x.shape[1]).unsqueeze(-1)
            if self.pooling == "mean":
                pooled = (x * keep).sum(1) / lengths.clamp(min=1).unsqueeze(1).to(x.dtype)
            else:
                pooled = x.masked_fill(~keep, float("-inf")).max(dim=1).values
        return self.head(self.dropout(pooled))


def sinusoids(count: int, dim: int) -> torch.Tensor:
    """The fixed position encodings of "Attention is all you need" ([count, dim])."""
    position = torch.arange(count, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(count, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : dim // 2]
    return table


class TransformerNet(nn.Module):
    """Embedding + positions -> nn.TransformerEncoder (key padding mask) -> pooling -> linear."""

    def __init__(self, cfg: Any, info: DatasetInfo) -> None:
        super().__init__()
        dim = cfg.embedding_dim
        self.embedding = _embedding(info, dim)
        self.pooling = cfg.pooling
        # CLS pooling reads position 0: the dataset's <cls> token, or a learned vector.
        self.own_cls = cfg.pooling == "cls" and info.extra.get("cls_index") is None
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if self.own_cls else None
        count = int(info.extra["max_length"]) + int(self.own_cls)
        self.learned_positions = cfg.positions == "learned"
        if self.learned_positions:
            self.positions = nn.Embedding(count, dim)
        else:
            self.register_buffer("positions_table", sinusoids(count, dim), persistent=False)
        layer = nn.TransformerEncoderLayer(
            dim,
            cfg.heads,
            cfg.feedforward,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=cfg.norm_first,
        )
        self.encoder = nn.TransformerEncoder(
            layer,
            cfg.layers,
            norm=nn.LayerNorm(dim) if cfg.norm_first else None,
            enable_nested_tensor=False,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(dim, info.num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            lengths = lengths + 1
        size = x.shape[1]
        if self.learned_positions:
            x = x + self.positions(torch.arange(size, device=x.device)).unsqueeze(0)
        else:
            x = x + self.positions_table[:size].unsqueeze(0)
        keep = valid_mask(lengths, size)
        x = self.encoder(self.dropout(x), src_key_padding_mask=~keep)
        if self.pooling == "cls":
            pooled = x[:, 0]
        else:
            weights = keep.unsqueeze(-1).to(x.dtype)
            pooled = (x * weights).sum(1) / lengths.clamp(min=1).unsqueeze(1).to(x.dtype)
        return self.head(self.dropout(pooled))


class TextCnnNet(nn.Module):
    """Embedding -> parallel Conv1d of several widths -> ReLU -> max over time -> linear."""

    def __init__(self, cfg: Any, info: DatasetInfo) -> None:
        super().__init__()
        self.embedding = _embedding(info, cfg.embedding_dim)
        self.kernel_sizes = list(cfg.kernel_sizes)
        self.encoder = nn.ModuleList(
            nn.Conv1d(cfg.embedding_dim, cfg.filters, k) for k in self.kernel_sizes
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.filters * len(self.kernel_sizes), info.num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens).transpose(1, 2)  # [batch, dim, seq]
        # Zeros after the text (the <pad> vector is zero too), so a window starting at any
        # position of the text exists however short the text is.
        x = F.pad(x, (0, max(self.kernel_sizes) - 1))
        keep = valid_mask(lengths, tokens.shape[1]).unsqueeze(1)
        features = []
        for conv in self.encoder:
            y = F.relu(conv(x))[:, :, : tokens.shape[1]]  # windows starting at each position
            features.append(y.masked_fill(~keep, float("-inf")).max(dim=2).values)
        return self.head(self.dropout(torch.cat(features, dim=1)))
