"""CARP (sequence-models' dilated convolutional protein LM) as an Encoder.

Tokens: sequence-models' ``SimpleCollater`` (no BOS/EOS; padded with the gap token, which
the ``CARP`` wrapper turns into the convolutions' input mask). One forward of the package's
``CARP`` wrapper returns every layer: layer 0 (embedding + up-projection) at ``out[0]``,
blocks 1..L at ``out["representations"][i]``. CARP's final LayerNorm (``last_norm``) feeds
only the LM decoder; the wrapper returns the last block without it, and so do we.

Model configs (conf/model/carp_*.yaml) give ``arch``: d_embed, d_model, n_layers,
kernel_size, r, slim, activation, the fields of a CARP checkpoint that
``sequence_models.pretrained.load_carp`` builds its ``ByteNetLM`` from. ``random_init``
builds the same module from them without reading any file. CARP has no positional
embedding and so no hard length limit; ``max_len`` is a practical cap (see the configs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from sequence_models.collaters import SimpleCollater
from sequence_models.constants import ALL_AAS, MASK, PAD, PROTEIN_ALPHABET
from sequence_models.convolutional import ByteNetLM
from sequence_models.pretrained import CARP, load_carp
from torch import nn

from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.onehot import check_sequences
from ptransfer.encoders.weights import (
    ModuleEncoder,
    WeightsFileError,
    load_error,
    read_checkpoint,
    require_keys,
)

ARCH_KEYS = ("d_embed", "d_model", "n_layers", "kernel_size", "r", "slim", "activation")
CHECKPOINT_KEYS = ("model", *ARCH_KEYS, "model_state_dict")


def build_carp_module(arch: Mapping) -> CARP:
    """The ``CARP`` module ``load_carp`` would build for a checkpoint with these fields."""
    missing = [k for k in ARCH_KEYS if k not in arch]
    if missing:
        raise ValueError(f"model.arch lacks CARP hyper-parameter(s) {missing}")
    bytenet = ByteNetLM(
        len(PROTEIN_ALPHABET),
        arch["d_embed"],
        arch["d_model"],
        arch["n_layers"],
        arch["kernel_size"],
        arch["r"],
        dropout=0.0,
        activation=arch["activation"],
        causal=False,
        padding_idx=PROTEIN_ALPHABET.index(MASK),
        final_ln=True,
        slim=arch["slim"],
    )
    return CARP(bytenet.eval(), pad_idx=PROTEIN_ALPHABET.index(PAD))


def load_carp_module(path: Path) -> CARP:
    """Read a CARP checkpoint file and build it with sequence-models' own ``load_carp``."""
    data = read_checkpoint(path)
    require_keys(data, CHECKPOINT_KEYS, path, "sequence-models CARP")
    kind = str(data["model"])
    if "carp" not in kind or "bigcarp" in kind:
        raise WeightsFileError(f"{path}: model={kind!r} is not a protein CARP checkpoint")
    try:
        return load_carp(data)
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise WeightsFileError(f"{path}: sequence-models cannot build CARP: "
                               f"{load_error(error)}") from error


def carp_n_params(arch: Mapping) -> int:
    """Parameter count of the CARP module built from ``arch``.

    Embedding 30 x d_embed; up-projection (1x1 conv) d_embed d_model + d_model; per block
    (h = d_model / 2 when slim, else d_model): LayerNorms 2 d_model + 4 h, 1x1 convs
    d_model h + h and h d_model + d_model, dilated conv kernel_size h^2 + h; final LayerNorm
    2 d_model; decoder (1x1 conv) d_model 30 + 30.
    """
    tokens, embed, model = len(PROTEIN_ALPHABET), arch["d_embed"], arch["d_model"]
    hidden = model // 2 if arch["slim"] else model
    block = (
        2 * model
        + 4 * hidden
        + (model * hidden + hidden)
        + (hidden * model + model)
        + (arch["kernel_size"] * hidden * hidden + hidden)
    )
    edges = tokens * embed + (embed * model + model) + 2 * model + (model * tokens + tokens)
    return edges + arch["n_layers"] * block


class CarpEncoder(ModuleEncoder):
    """Per-layer features of CARP models (see the module docstring).

    Constructor arguments: see ``ModuleEncoder``; ``family`` is carp, ``dim`` is d_model and
    ``arch`` the CARP checkpoint hyper-parameters.
    """

    def load(
        self, checkpoint: CheckpointRef, ablation: str, seed: int, scope: str = "full"
    ) -> CarpEncoder:
        """Build or read the module, apply the seeded ablation (in ``scope``), eval mode."""
        if self.family != "carp":
            raise ValueError(f"model.family={self.family!r}: CarpEncoder needs family carp")
        super().load(checkpoint, ablation, seed, scope)
        self.collater_ = SimpleCollater(PROTEIN_ALPHABET, pad=True)
        return self

    def build_module(self) -> nn.Module:
        return build_carp_module(self.arch)

    def read_module(self, path: Path) -> nn.Module:
        return load_carp_module(path)

    def module_architecture(self, module: nn.Module) -> dict[str, int]:
        return {
            "model.n_blocks": len(module.model.embedder.layers),
            "model.dim": module.model.last_norm.normalized_shape[0],
        }

    def residue_alphabet(self) -> str:
        return ALL_AAS

    def forward_layers(self, sequences: list[str], layers: Sequence[int]) -> torch.Tensor:
        """len(layers) x B x T x D features, T = longest sequence (CARP adds no tokens)."""
        module = self.loaded_module()
        check_sequences(sequences, ALL_AAS, self.max_len, self.name)
        (tokens,) = self.collater_([(s,) for s in sequences])  # B x T, gap-padded
        out = module(tokens.to(self.device), repr_layers=list(layers))
        return torch.stack([out[0] if i == 0 else out["representations"][i] for i in layers])
