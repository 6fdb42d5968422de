"""The masked-LM objective for both model families: masking, loss, crops and batches.

Training examples are random crops of at most ``data.max_len`` residues, in length-bucketed
batches under a token budget. One training loop (``ptransfer.pretrain.train``) serves ESM-2 and
CARP; what differs between them is in ``ptransfer.pretrain.adapters``, the corpus in
``ptransfer.pretrain.corpus``.

Masking is BERT's: 15 % of the real residues are selected; of those 80 % become the mask
token, 10 % a residue drawn uniformly from the 20 canonical amino acids, 10 % stay as they
are; the loss is the cross-entropy on selected positions only (``IGNORE_INDEX`` elsewhere).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

CANONICAL = "ACDEFGHIKLMNPQRSTVWY"
# Letters both alphabets (ESM-1b and sequence-models' PROTEIN_ALPHABET) know as residues.
RESIDUES = frozenset(CANONICAL + "XBZUO")
IGNORE_INDEX = -100  # cross_entropy's default ignore_index: positions that carry no loss


@dataclass(frozen=True)
class MaskingRates:
    """Fraction of residues selected, and how the selected ones are corrupted."""

    select: float = 0.15
    to_mask: float = 0.8
    to_random: float = 0.1  # the rest (1 - to_mask - to_random) stays unchanged

    def __post_init__(self) -> None:
        if not 0.0 < self.select <= 1.0:
            raise ValueError(f"mlm.select must be in (0, 1], got {self.select}")
        if self.to_mask < 0 or self.to_random < 0 or self.to_mask + self.to_random > 1.0:
            raise ValueError(
                f"mlm.to_mask ({self.to_mask}) and mlm.to_random ({self.to_random}) must be "
                "non-negative and sum to at most 1"
            )


def mask_tokens(
    tokens: torch.Tensor,
    maskable: torch.Tensor,
    mask_idx: int,
    canonical_ids: torch.Tensor,
    rates: MaskingRates,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a batch for masked-LM training.

    Args:
        tokens: B x T token ids (CPU, the generator's device).
        maskable: B x T bool, True on real residues (never BOS/EOS/padding).
        mask_idx: the family's mask token id.
        canonical_ids: 20 token ids of the canonical amino acids (random replacements).
        rates: selection and corruption fractions.
        generator: the only source of randomness, so a step's masking is reproducible.

    Returns:
        inputs: B x T corrupted token ids.
        targets: B x T original ids on selected positions, ``IGNORE_INDEX`` elsewhere.
    Every sequence with a residue gets at least one selected position, so no row (and no
    tiny batch) is without a loss term.
    """
    draw = torch.rand(tokens.shape, generator=generator)
    selected = (draw < rates.select) & maskable
    empty_rows = maskable.any(dim=1) & ~selected.any(dim=1)
    if empty_rows.any():
        # rows that drew nothing get one residue: the argmax of fresh noise over its residues
        noise = torch.rand(tokens.shape, generator=generator).masked_fill(~maskable, -1.0)
        forced = F.one_hot(noise.argmax(dim=1), tokens.shape[1]).bool()
        selected |= forced & empty_rows[:, None]
    action = torch.rand(tokens.shape, generator=generator)
    to_mask = selected & (action < rates.to_mask)
    to_random = selected & (action >= rates.to_mask) & (action < rates.to_mask + rates.to_random)
    pick = torch.randint(len(canonical_ids), tokens.shape, generator=generator)
    inputs = tokens.clone()
    inputs[to_mask] = mask_idx
    inputs[to_random] = canonical_ids[pick[to_random]]
    targets = torch.where(selected, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return inputs, targets


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over selected positions (mean or sum). logits B x T x V, targets B x T."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                           ignore_index=IGNORE_INDEX, reduction=reduction)


def crop(sequence: str, max_len: int, rng: np.random.Generator) -> str:
    """A random window of ``max_len`` residues (the sequence itself when it is short enough)."""
    if len(sequence) <= max_len:
        return sequence
    start = int(rng.integers(0, len(sequence) - max_len + 1))
    return sequence[start : start + max_len]


def token_budget_batches(
    lengths: np.ndarray,
    toks_per_batch: int,
    n_special: int,
    rng: np.random.Generator | None,
    max_batch_size: int | None = None,
) -> list[np.ndarray]:
    """Length-bucketed batches whose padded size stays within ``toks_per_batch``.

    Sequences are sorted by length (ties in random order), cut greedily into batches with
    ``n_sequences * (longest + n_special) <= toks_per_batch``, and the batch order is
    shuffled. ``rng=None`` keeps input order for ties and batches (evaluation).
    lengths: N residue counts. Returns index arrays into ``lengths``.
    """
    longest = int(lengths.max()) if len(lengths) else 0
    if longest + n_special > toks_per_batch:
        raise ValueError(
            f"toks_per_batch={toks_per_batch} cannot hold one sequence of {longest} residues "
            f"(+{n_special} special tokens): raise schedule.toks_per_batch or lower data.max_len"
        )
    order = np.arange(len(lengths)) if rng is None else rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches, current = [], []
    for index in order:
        width = int(lengths[index]) + n_special  # sorted ascending: the newcomer is the longest
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or (len(current) + 1) * width > toks_per_batch):
            batches.append(np.array(current))
            current = []
        current.append(index)
    if current:
        batches.append(np.array(current))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
