"""A task's splits as fine-tuning batches, targets as tensors, outputs back in split order.

Batches are extraction's (``embed.batching.batch_units``): length-sorted, under the token
budget ``tune.toks_per_batch``, never splitting a sequence (its windows stay in one batch,
so its residue states can be averaged before the head). Training visits them in a seeded
random order each epoch; evaluation in order.

Outputs come back in the order of the split's labelled targets, the order
``Split.flat_targets()`` has with per-residue ``IGNORE`` rows dropped: per protein one row
per sequence, per residue one row per labelled residue (the probes' row order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ptransfer.embed.batching import Batching, batch_units, split_into_pieces
from ptransfer.tasks.base import IGNORE, Split
from ptransfer.tune.network import Batch


@dataclass(frozen=True)
class TargetScale:
    """Regression targets are trained standardised: (y - mean) / std of the train split."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def of(cls, targets: np.ndarray) -> TargetScale:
        std = float(np.std(targets))
        return cls(float(np.mean(targets)), std if std > 0 else 1.0)


def make_batches(split: Split, batching: Batching) -> list[Batch]:
    """The split's sequences as whole-sequence batches (``batch_units``), longest first."""
    # batch_units cuts a longest-first list of sequences (as extraction's shards give it)
    order = sorted(range(len(split)), key=lambda i: (-len(split.sequences[i]), i))
    batches = []
    for unit in batch_units([split.sequences[i] for i in order], batching):
        rows = [order[k] for k in unit]
        sequences = [split.sequences[i] for i in rows]
        pieces = split_into_pieces(sequences, batching.max_len, batching.length_policy)
        covered = [0] * len(sequences)
        for piece in pieces:
            covered[piece.seq_index] = max(covered[piece.seq_index], piece.end)
        batches.append(Batch(list(rows), sequences, pieces, covered))
    return batches


def batch_targets(batch: Batch, split: Split, level: str, kind: str,
                  scale: TargetScale) -> torch.Tensor:
    """Protein: B targets; residue: (sum covered) labels, ``IGNORE`` kept (the loss skips it)."""
    if level == "residue":
        labels = [np.asarray(split.targets[row])[:n] for row, n in zip(batch.rows, batch.covered)]
        return torch.as_tensor(np.concatenate(labels), dtype=torch.long)
    values = np.asarray(split.targets)[batch.rows]
    if kind == "regression":
        return torch.as_tensor((values - scale.mean) / scale.std, dtype=torch.float32)
    return torch.as_tensor(values, dtype=torch.long)


def labelled_targets(split: Split, level: str) -> np.ndarray:
    """The split's targets in output order (per residue: ``IGNORE`` rows dropped)."""
    flat = split.flat_targets()
    return flat[flat != IGNORE] if level == "residue" else flat


def to_predictions(outputs: torch.Tensor, kind: str, scale: TargetScale) -> np.ndarray:
    """Network outputs -> predictions: regression values (N), or class probabilities (N x C)."""
    outputs = outputs.float()
    if kind == "regression":
        return (outputs[:, 0] * scale.std + scale.mean).double().numpy()
    return torch.softmax(outputs, dim=-1).double().numpy()


def in_split_order(per_batch: list[torch.Tensor], batches: list[Batch], split: Split,
                   level: str) -> torch.Tensor:
    """Concatenate batch outputs (batch order) into the split's labelled-row order."""
    by_row: dict[int, torch.Tensor] = {}
    for out, batch in zip(per_batch, batches):
        sizes = batch.covered if level == "residue" else [1] * len(batch.rows)
        for row, part in zip(batch.rows, torch.split(out, sizes)):
            by_row[row] = part
    ordered = torch.cat([by_row[row] for row in range(len(split))])
    if level != "residue":
        return ordered
    keep = torch.as_tensor(split.flat_targets() != IGNORE)
    if len(keep) != len(ordered):  # truncated residues would shift every label after them
        raise ValueError("per-residue outputs do not cover every residue (length policy "
                         "truncate on sequences longer than max_len)")
    return ordered[keep]
