"""The network fine-tuned: the encoder's last layer per residue, then a small head.

Per-residue states come from the encoder's own forward (``forward_layers``: the family's
tokens, padding and special tokens, as ``embed`` handles them) at the last layer. A sequence
longer than the model's ``max_len`` is embedded in windows (``embed.batching``: the
``window`` or ``truncate`` policy of extraction); each residue's state is the mean of the
windows covering it, computed differentiably (``index_add``), so one batch item is always a
whole sequence.

Heads (Schmirler et al. 2024's): per protein, the mean of the residue states over the real
residues (padding masked), then ``Linear(D, D) -> tanh -> dropout -> Linear(D, out)``; per
residue, the same MLP applied to every residue state (a token-level head). ``out`` is 1 for
regression and the number of classes for classification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ptransfer.embed.batching import Piece


class MLPHead(nn.Module):
    """``... x D -> ... x out``: Linear(D, D), tanh, dropout, Linear(D, out)."""

    def __init__(self, dim: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.tanh(self.dense(x))))


@dataclass
class Batch:
    """One forward: whole sequences of a split and the pieces (windows) that embed them.

    rows: the split's row of each sequence (B); sequences: B strings; pieces: the forward
    rows, ``seq_index`` into ``sequences``; covered: residues of each sequence that get a
    state (its length, or ``max_len`` under ``truncate``).
    """

    rows: list[int]
    sequences: list[str]
    pieces: list[Piece]
    covered: list[int]

    @property
    def n_residues(self) -> int:
        return sum(self.covered)


def combine_pieces(features: torch.Tensor, pieces: Sequence[Piece], n_seq: int,
                   width: int) -> torch.Tensor:
    """Piece features P x Tp x D -> per-sequence states B x width x D (window mean).

    Residue ``j`` of sequence ``b`` gets the mean of the pieces covering it; positions no
    piece covers are zero. Without windows every count is 1 and the states are the piece
    features exactly.
    """
    dim, device = features.shape[-1], features.device
    source, target = [], []
    for row, piece in enumerate(pieces):
        span = piece.end - piece.start
        source.append(row * features.shape[1] + torch.arange(span))
        target.append(piece.seq_index * width + piece.start + torch.arange(span))
    source_index = torch.cat(source).to(device)
    target_index = torch.cat(target).to(device)
    flat = features.reshape(-1, dim).index_select(0, source_index)
    summed = torch.zeros(n_seq * width, dim, dtype=flat.dtype, device=device)
    summed = summed.index_add(0, target_index, flat)
    counts = torch.bincount(target_index, minlength=n_seq * width).clamp(min=1)
    return (summed / counts.unsqueeze(1).to(flat.dtype)).reshape(n_seq, width, dim)


class TuneNetwork(nn.Module):
    """Encoder (its module registered as ``backbone``) + MLP head.

    ``forward(batch)``: per protein B x out; per residue (sum of ``batch.covered``) x out,
    the residues of each sequence in order, sequences in batch order.
    """

    def __init__(self, encoder, level: str, n_out: int, dropout: float) -> None:
        super().__init__()
        if level not in ("protein", "residue"):
            raise ValueError(f"task level {level!r}: expected protein or residue")
        self.backbone = encoder.loaded_module()
        self.head = MLPHead(encoder.dim, n_out, dropout)
        self.level = level
        self.layer = encoder.n_layers - 1  # the encoder's last layer
        self._encoder = [encoder]  # a list: not a submodule (the backbone already is)

    def states(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Residue states B x T x D and their mask B x T (True = a real residue)."""
        encoder = self._encoder[0]
        texts = [batch.sequences[p.seq_index][p.start:p.end] for p in batch.pieces]
        features = encoder.forward_layers(texts, [self.layer])[0]  # P x Tp x D
        width = max(batch.covered)
        states = combine_pieces(features, batch.pieces, len(batch.sequences), width)
        covered = torch.tensor(batch.covered, device=states.device)
        mask = torch.arange(width, device=states.device).unsqueeze(0) < covered.unsqueeze(1)
        return states, mask

    def forward(self, batch: Batch) -> torch.Tensor:
        states, mask = self.states(batch)
        if self.level == "residue":
            return self.head(states[mask])  # (sum L) x out, row-major = sequence order
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(dim=1) / weights.sum(dim=1)  # B x D
        return self.head(pooled)
