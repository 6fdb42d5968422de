"""The Encoder contract: a model that maps sequences to per-layer, per-residue features.

Every model family (ESM via fair-esm, CARP via sequence-models, the one-hot baseline)
implements the same small interface, so extraction, the store and the probes never ask
which family they are talking to. Families differ in tokens, padding, where layer 0 lives
and which layers get a final LayerNorm; each encoder hides that behind ``embed``.

Lifecycle (scikit-learn style): ``__init__`` only stores the configuration; ``load`` builds
the module (reading weights when the ablation needs them) and applies the seeded ablation
within its scope (``full``: every tensor; ``reference``: what the paper's code changed,
``encoders.ablation_scopes``); ``embed`` runs it.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch


@dataclass
class CheckpointRef:
    """A named pretraining checkpoint: ``final`` or an intermediate one given as a file."""

    name: str = "final"
    step: int | None = None
    path: str | None = None


@dataclass
class EncoderIdentity:
    """Everything that changes the numbers an encoder produces. Keys the embedding store."""

    model: str
    checkpoint: str
    ablation: str
    seed: int
    length_policy: str
    extra: dict = field(default_factory=dict)
    scope: str = "full"

    def as_dict(self) -> dict:
        d = {
            "model": self.model,
            "checkpoint": self.checkpoint,
            "ablation": self.ablation,
            "ablation_scope": self.scope,
            "seed": int(self.seed),
            "length_policy": self.length_policy,
        }
        d.update(self.extra)
        return d


class Encoder(abc.ABC):
    """Per-layer features for a batch of sequences.

    Attributes (available right after ``__init__``, before ``load``):
        name: model name as the package names it (``esm2_t6_8M_UR50D``, ``carp_600k``, ``onehot``).
        family: ``esm1``, ``esm1b``, ``esm2``, ``carp`` or ``onehot``.
        n_layers: number of layer outputs, layer 0 (token embedding output) to layer L: L + 1.
        dim: feature dimension D of every layer.
        n_params: parameter count (from the config; checked against the module in tests).
        max_len: most residues (special tokens excluded) one forward pass accepts, or None.
        pooling: how per-protein features are made: ``mean`` over real residues (and the
            positions of :meth:`pooled_prefix`), or ``flatten`` (one-hot baseline:
            zero-padded, flattened).
    """

    name: str
    family: str
    n_layers: int
    dim: int
    n_params: int
    max_len: int | None
    pooling: str = "mean"

    def __init__(
        self,
        name: str,
        family: str,
        n_blocks: int,
        dim: int,
        n_params: int,
        max_len: int | None,
        weights: str | None = None,
        checkpoints: dict | None = None,
    ) -> None:
        # The keys of every conf/model yaml, so the cell treats all models alike.
        self.name = name
        self.family = family
        self.n_blocks = n_blocks
        self.n_layers = n_blocks + 1
        self.dim = dim
        self.n_params = n_params
        self.max_len = max_len
        self.weights = weights
        self.checkpoints = checkpoints

    @abc.abstractmethod
    def load(
        self, checkpoint: CheckpointRef, ablation: str, seed: int, scope: str = "full"
    ) -> Encoder:
        """Build the module, load weights if ``ablation`` needs them, apply the ablation.

        ``scope`` (``ablation.scope``): ``full`` changes every tensor, ``reference`` only the
        ones the paper's code changed for this family; families without reference rules
        raise ``ValueError`` naming the key.
        """

    @abc.abstractmethod
    def embed(self, sequences: list[str]) -> torch.Tensor:
        """Per-layer, per-residue features of a batch.

        Every sequence has at most ``max_len`` residues. Returns a float tensor
        n_layers x B x T x D (T = longest sequence in the batch) on the encoder's device,
        where ``[:, i, j]`` are the features of residue j of sequence i: special tokens
        (BOS/EOS) are removed; positions j >= len(sequences[i]) are padding and carry no
        meaning.
        """

    def pooled_prefix(self) -> torch.Tensor | None:
        """Features of positions before the residues that the per-protein mean includes.

        n_layers x P x D float32 on the CPU, the same for every sequence, or None (the
        default: the mean is over the residues alone). A left-to-right model's start-token
        state depends on nothing after it, so UniRep's ``h_avg`` (the mean over the start
        token and the residues) is this prefix pooled with the residues' features.
        """
        return None

    def residue_alphabet(self) -> str | None:
        """The residue letters this model can embed, known without weights (None: unchecked).

        Families override it with their tokenizer's letters: fair-esm's ESM alphabets lack
        ``J``; CARP's and the one-hot table's include it.
        """
        return None

    def check_alphabet(self, sequences: Iterable[str],
                       where: Mapping[str, str] | None = None) -> None:
        """Raise ``ValueError`` at the first residue outside :meth:`residue_alphabet`.

        Needs no weights, so a cell calls it before loading any model. ``where`` maps a
        sequence to its source (``"file.csv row 6"``, as the task checks say), else the
        message names the 1-based position of the sequence in ``sequences``.
        """
        alphabet = self.residue_alphabet()
        if alphabet is None:
            return
        allowed = set(alphabet)
        for index, sequence in enumerate(sequences):
            bad = set(sequence) - allowed
            if bad:
                position = min(sequence.index(c) for c in bad)
                place = (where or {}).get(sequence, f"sequence {index + 1}")
                raise ValueError(
                    f"{place}: residue {sequence[position]!r} at position {position + 1} is "
                    f"outside the alphabet of model={self.name} ({''.join(sorted(allowed))}); "
                    "replace it (X, any residue, is accepted) or drop the row")

    def to(self, device: torch.device | str) -> Encoder:
        """Move the loaded module to ``device``; encoders without a module ignore this."""
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")
