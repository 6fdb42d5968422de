"""The one-hot baseline, and the input checks every encoder applies to its sequences.

One-hot features: one layer, D = 20 (the canonical amino acids ``ACDEFGHIKLMNPQRSTVWY`` in
that order). Ambiguity and rare codes are encoded as the residues they stand for:

    B (Asx) = 0.5 D + 0.5 N       Z (Glx) = 0.5 E + 0.5 Q       J (Xle) = 0.5 I + 0.5 L
    U (selenocysteine) -> C       O (pyrrolysine) -> K          X (any) = 1/20 everywhere

so every row sums to 1. Per-protein features are the zero-padded, flattened one-hot matrix
(``pooling = "flatten"``), the baseline of the FLIP benchmark. There are no weights: the only
ablation is ``pretrained``, and ``load`` refuses the others.

Padding: per-protein rows have 20 x L_pad columns, L_pad = the task's longest sequence
(the FLIP baseline) unless ``model.max_len`` caps it, in which case longer proteins are
truncated to their first ``max_len`` residues for the per-protein features
(``padded_length``). Per-residue one-hot is unaffected by the cap: one-hot of a residue does
not depend on its neighbours, so windows of ``max_len`` give the same features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ptransfer.encoders.ablation_scopes import check_scope
from ptransfer.encoders.ablations import PRETRAINED, check_ablation
from ptransfer.encoders.base import CheckpointRef, Encoder

CANONICAL = "ACDEFGHIKLMNPQRSTVWY"
# Non-canonical code -> {canonical residue: weight}; "X" is handled as uniform.
AMBIGUOUS: dict[str, dict[str, float]] = {
    "B": {"D": 0.5, "N": 0.5},
    "Z": {"E": 0.5, "Q": 0.5},
    "J": {"I": 0.5, "L": 0.5},
    "U": {"C": 1.0},
    "O": {"K": 1.0},
}
ONEHOT_ALPHABET = CANONICAL + "".join(AMBIGUOUS) + "X"
_ROW = {code: row for row, code in enumerate(ONEHOT_ALPHABET)}


def check_sequences(
    sequences: Sequence[str], alphabet: Iterable[str], max_len: int | None, model: str
) -> None:
    """Raise ``ValueError`` naming the first sequence that ``model`` cannot embed.

    A sequence must be non-empty, use only characters of ``alphabet`` (upper case) and have
    at most ``max_len`` residues (None: no limit). Cutting long sequences into windows is the
    caller's job (extraction), so a long one here is a bug upstream, reported as such.
    """
    if isinstance(sequences, str):
        raise TypeError(f"{model}: embed() takes a list of sequences, not one string")
    if len(sequences) == 0:
        raise ValueError(f"{model}: embed() got no sequences")
    allowed = set(alphabet)
    for index, sequence in enumerate(sequences):
        if not sequence:
            raise ValueError(f"{model}: sequence {index} is empty")
        if max_len is not None and len(sequence) > max_len:
            raise ValueError(
                f"{model}: sequence {index} has {len(sequence)} residues, more than max_len="
                f"{max_len}; extraction must window or truncate it first"
            )
        unknown = set(sequence) - allowed
        if unknown:
            raise ValueError(
                f"{model}: sequence {index} has character(s) {sorted(unknown)} outside the "
                f"model's alphabet {''.join(sorted(allowed))}"
            )


def padded_length(lengths: Iterable[int], max_len: int | None) -> int:
    """Residues per flattened per-protein row: the longest of ``lengths``, capped at ``max_len``."""
    longest = max(lengths, default=0)
    return longest if max_len is None else min(longest, int(max_len))


def residue_table() -> torch.Tensor:
    """len(ONEHOT_ALPHABET) x 20 float32: row i encodes character ``ONEHOT_ALPHABET[i]``."""
    table = torch.zeros(len(ONEHOT_ALPHABET), len(CANONICAL))
    table[: len(CANONICAL)] = torch.eye(len(CANONICAL))
    for code, weights in AMBIGUOUS.items():
        for residue, weight in weights.items():
            table[_ROW[code], CANONICAL.index(residue)] = weight
    table[_ROW["X"]] = 1.0 / len(CANONICAL)
    return table


class OneHotEncoder(Encoder):
    """One layer of one-hot residue features (see the module docstring for the codes)."""

    pooling = "flatten"

    def __init__(
        self,
        name: str = "onehot",
        family: str = "onehot",
        n_blocks: int = 0,
        dim: int = len(CANONICAL),
        n_params: int = 0,
        max_len: int | None = None,
        weights: str | None = None,
        checkpoints: dict | None = None,
    ) -> None:
        super().__init__(name, family, n_blocks, dim, n_params, max_len, weights, checkpoints)

    def load(
        self, checkpoint: CheckpointRef, ablation: str, seed: int, scope: str = "full"
    ) -> OneHotEncoder:
        """Check the configuration; one-hot has nothing to load and nothing to ablate.

        Either ``scope`` is accepted (``pretrained`` changes nothing in both).
        """
        check_scope(scope)
        if check_ablation(ablation) != PRETRAINED:
            raise ValueError(
                f"ablation={ablation} is meaningless for the one-hot baseline (it has no "
                f"parameters to re-initialise or permute); use ablation={PRETRAINED}"
            )
        if (self.n_layers, self.dim, self.n_params) != (1, len(CANONICAL), 0):
            raise ValueError(
                f"model={self.name}: one-hot needs model.n_blocks=0, model.dim=20 and "
                f"model.n_params=0, got {self.n_blocks}, {self.dim} and {self.n_params}"
            )
        self.table_ = residue_table()
        return self

    def residue_alphabet(self) -> str:
        return ONEHOT_ALPHABET

    def embed(self, sequences: list[str]) -> torch.Tensor:
        """1 x B x T x 20 float32 one-hot features; padding positions are zeros."""
        if not hasattr(self, "table_"):
            raise RuntimeError(f"{self.name}: call load() before embed()")
        check_sequences(sequences, ONEHOT_ALPHABET, self.max_len, self.name)
        longest = max(len(s) for s in sequences)
        # Index len(ONEHOT_ALPHABET) is an all-zero padding row.
        table = torch.cat([self.table_, torch.zeros(1, len(CANONICAL))])
        codes = torch.full((len(sequences), longest), len(ONEHOT_ALPHABET), dtype=torch.long)
        for i, sequence in enumerate(sequences):
            codes[i, : len(sequence)] = torch.tensor([_ROW[c] for c in sequence])
        return table[codes].unsqueeze(0)  # 1 x B x T x 20
