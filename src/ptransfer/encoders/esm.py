"""ESM-1, ESM-1b and ESM-2 (fair-esm) behind one Encoder.

The three generations differ only in what fair-esm already handles: the module class
(``ProteinBertModel`` for ESM-1/1b, ``ESM2``), the alphabet (ESM-1 prepends BOS only; ESM-1b
and ESM-2 add BOS and EOS) and the checkpoint format (v1 ``args`` Namespace, v2 ``cfg``).
So there is one mechanism: tokenise with the package's batch converter, run the package's
own forward once with ``repr_layers`` = every layer, drop the special tokens.

Layers: 0 is the token embedding output (after ESM-1b's ``emb_layer_norm_before`` and
ESM-2's token-dropout rescaling, as the package returns it), 1..L the blocks. For ESM-1b and
ESM-2 the last layer has the final LayerNorm (``emb_layer_norm_after``) applied and the others
do not: that is what fair-esm returns and what its users and the papers' probes see. ESM-1
has no final LayerNorm.

Model configs (conf/model/esm*.yaml) give ``arch``: for ESM-2 the ``ESM2`` constructor's
arguments (num_layers, embed_dim, attention_heads, token_dropout); for ESM-1/1b the
``argparse.Namespace`` fields ``ProteinBertModel`` reads (arch, layers, embed_dim,
ffn_embed_dim, attention_heads, max_positions, emb_layer_norm_before, token_dropout,
final_bias). ``random_init`` builds the module from them without reading any file.
"""

from __future__ import annotations

import logging
import warnings
from argparse import Namespace
from collections.abc import Mapping, Sequence
from pathlib import Path

import esm.pretrained
import torch
from esm.data import Alphabet
from esm.model.esm1 import ProteinBertModel
from esm.model.esm2 import ESM2
from torch import nn

from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.fast_attention import fuse_attention
from ptransfer.encoders.onehot import check_sequences
from ptransfer.encoders.weights import (
    ESM_FAMILIES,
    ModuleEncoder,
    WeightsFileError,
    load_error,
    read_checkpoint,
    regression_file,
    require_keys,
)

log = logging.getLogger(__name__)

# family -> fair-esm alphabet; v1-format families -> the ``args.arch`` their checkpoints hold
ALPHABET_NAME = {"esm1": "ESM-1", "esm1b": "ESM-1b", "esm2": "ESM-1b"}
V1_ARCH = {"esm1": "protein_bert_base", "esm1b": "roberta_large"}


def esm_alphabet(family: str) -> Alphabet:
    """fair-esm's alphabet of ``family`` (tokens, BOS/EOS rules, batch converter)."""
    if family not in ESM_FAMILIES:
        raise ValueError(f"model.family={family!r} is not an ESM family {ESM_FAMILIES}")
    return Alphabet.from_architecture(ALPHABET_NAME[family])


def build_esm_module(family: str, arch: Mapping) -> nn.Module:
    """The fair-esm module of ``family`` from config hyper-parameters, no weights read."""
    alphabet = esm_alphabet(family)
    if family != "esm2" and arch.get("arch") != V1_ARCH[family]:
        raise ValueError(
            f"model.arch.arch={arch.get('arch')!r}: family {family} needs {V1_ARCH[family]!r}"
        )
    try:
        if family == "esm2":
            return ESM2(alphabet=alphabet, **arch)
        return ProteinBertModel(Namespace(**arch), alphabet)
    except (TypeError, AttributeError) as error:  # unknown or missing hyper-parameter
        raise ValueError(f"model.arch cannot build a fair-esm {family} model: {error}") from error


def load_esm_module(family: str, path: Path) -> nn.Module:
    """Read a fair-esm checkpoint file and build its module with fair-esm's own core loader.

    ``esm.pretrained.load_model_and_alphabet_core`` is what the package's local and hub
    loaders call once they have read the files; it is given the family (not the file stem)
    so that any file name works with ``model.weights``. A missing contact-regression file
    is a logged note: the package then loads everything but the contact head.
    """
    data = read_checkpoint(path)
    _check_format(family, data, path)
    regression_path = regression_file(path)
    regression = read_checkpoint(regression_path) if regression_path.is_file() else None
    if regression is None:
        log.info(
            "%s not found: loading without the contact head (not used for embeddings)",
            regression_path.name,
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Regression weights not found")
        try:
            module, _ = esm.pretrained.load_model_and_alphabet_core(family, data, regression)
        except (RuntimeError, KeyError, AttributeError, TypeError) as error:
            raise WeightsFileError(
                f"{path}: fair-esm cannot build a {family} model from it: {load_error(error)}"
            ) from error
    return module


def _check_format(family: str, data: dict, path: Path) -> None:
    if family == "esm2":
        require_keys(data, ("model", "cfg"), path, "fair-esm ESM-2 (v2 format)")
        return
    require_keys(data, ("model", "args"), path, f"fair-esm {family} (v1 format)")
    found = getattr(data["args"], "arch", None)
    if found != V1_ARCH[family]:
        raise WeightsFileError(
            f"{path}: args.arch={found!r} is not a {family} checkpoint ({V1_ARCH[family]!r})"
        )


def esm_n_params(family: str, arch: Mapping) -> int:
    """Parameter count of the fair-esm module built from ``arch`` (tied weights once).

    Token embedding V x D; per block: q, k, v, out projections 4 (D^2 + D), two LayerNorms
    4 D, FFN D F + F + F D + D (F = 4 D for ESM-2), ESM-1's bias_k/bias_v 2 D; contact
    regression L H + 1. ESM-1b/2 add the final LayerNorm 2 D and the LM head (dense D^2 + D,
    LayerNorm 2 D, bias V; its weight is the tied embedding); ESM-1b learned positions
    (max_positions + padding_idx + 1) x D and ``emb_layer_norm_before`` 2 D; ESM-1 an output
    projection V x D and, with ``final_bias``, its bias V.
    """
    alphabet = esm_alphabet(family)
    vocab = len(alphabet)
    if family == "esm2":
        layers, dim, heads = arch["num_layers"], arch["embed_dim"], arch["attention_heads"]
        ffn = 4 * dim
    else:
        layers, dim, heads = arch["layers"], arch["embed_dim"], arch["attention_heads"]
        ffn = arch["ffn_embed_dim"]
    block = 4 * (dim * dim + dim) + 4 * dim + (dim * ffn + ffn) + (ffn * dim + dim)
    total = vocab * dim + (layers * heads + 1)
    if family == "esm1":
        block += 2 * dim
        total += vocab * dim + (vocab if arch.get("final_bias") else 0)
    else:
        total += 2 * dim + (dim * dim + dim) + 2 * dim + vocab
    if family == "esm1b":
        total += (arch["max_positions"] + alphabet.padding_idx + 1) * dim
        total += 2 * dim if arch.get("emb_layer_norm_before") else 0
    return total + layers * block


class EsmEncoder(ModuleEncoder):
    """Per-layer features of ESM-1, ESM-1b and ESM-2 models (see the module docstring).

    Constructor arguments: see ``ModuleEncoder``; ``family`` is esm1, esm1b or esm2 and
    ``arch`` the fair-esm constructor hyper-parameters. ``fast_attention`` (default True)
    runs ESM-2's rotary attention fused (``encoders.fast_attention``); same features.
    """

    def __init__(self, *args, fast_attention: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fast_attention = fast_attention

    def load(
        self, checkpoint: CheckpointRef, ablation: str, seed: int, scope: str = "full"
    ) -> EsmEncoder:
        """Build or read the module, apply the seeded ablation (in ``scope``), eval mode."""
        self.alphabet_ = esm_alphabet(self.family)  # also rejects a non-ESM model.family
        super().load(checkpoint, ablation, seed, scope)
        self.batch_converter_ = self.alphabet_.get_batch_converter()
        if self.fast_attention:
            fuse_attention(self.module_)
        return self

    def residue_alphabet(self) -> str:
        return "".join(t for t in esm_alphabet(self.family).standard_toks if t.isalpha())

    def build_module(self) -> nn.Module:
        return build_esm_module(self.family, dict(self.arch))

    def read_module(self, path: Path) -> nn.Module:
        return load_esm_module(self.family, path)

    def module_architecture(self, module: nn.Module) -> dict[str, int]:
        if isinstance(module, ESM2):
            return {"model.n_blocks": module.num_layers, "model.dim": module.embed_dim}
        return {"model.n_blocks": module.args.layers, "model.dim": module.args.embed_dim}

    def forward_layers(self, sequences: list[str], layers: Sequence[int]) -> torch.Tensor:
        """len(layers) x B x T x D features; BOS/EOS removed, T = longest sequence."""
        module = self.loaded_module()
        residues = [t for t in self.alphabet_.standard_toks if t.isalpha()]
        check_sequences(sequences, residues, self.max_len, self.name)
        _, _, tokens = self.batch_converter_([(str(i), s) for i, s in enumerate(sequences)])
        out = module(tokens.to(self.device), repr_layers=list(layers))
        first = int(self.alphabet_.prepend_bos)
        stop = first + max(len(s) for s in sequences)
        states = out["representations"]  # layer -> B x (T + specials) x D
        return torch.stack([states[i][:, first:stop] for i in layers])
