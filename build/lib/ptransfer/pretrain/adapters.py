"""What differs between ESM-2 and CARP for masked-LM training, in one small adapter each.

How sequences become tokens (ESM adds BOS/EOS, CARP does not), which token ids mean mask /
padding / the 20 canonical residues, how logits come out of the module, and the checkpoint
format each package loads.
"""

from __future__ import annotations

import logging
from argparse import Namespace
from pathlib import Path

import torch
from torch import nn

from ptransfer.pretrain.mlm import CANONICAL, RESIDUES

log = logging.getLogger(__name__)


class EsmAdapter:
    """ESM-2 (fair-esm ``ESM2``) with the ESM-1b alphabet: BOS + residues + EOS, then padding."""

    family = "esm2"
    n_special = 2
    ARCH_KEYS = ("num_layers", "embed_dim", "attention_heads", "token_dropout")
    SHAPE_KEYS = ("num_layers", "embed_dim")  # -> model config n_blocks, dim

    def __init__(self, arch: dict) -> None:
        import esm

        self.arch = arch
        self.alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
        self.mask_idx = self.alphabet.mask_idx
        self.canonical_ids = torch.tensor([self.alphabet.get_idx(a) for a in CANONICAL])
        self._lookup = {a: self.alphabet.get_idx(a) for a in RESIDUES}

    def build(self) -> nn.Module:
        from esm.model.esm2 import ESM2

        return ESM2(alphabet=self.alphabet, **self.constructor_args())

    def constructor_args(self) -> dict:
        """``ESM2(...)`` arguments: the ``arch`` block of a conf/model ESM-2 config."""
        return _pick(self.arch, self.ARCH_KEYS)

    def tokenize(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens B x (L_max + 2), maskable B x (L_max + 2) (True on residues only)."""
        width = max(len(s) for s in sequences) + 2
        tokens = torch.full((len(sequences), width), self.alphabet.padding_idx, dtype=torch.long)
        maskable = torch.zeros(tokens.shape, dtype=torch.bool)
        for row, seq in enumerate(sequences):
            tokens[row, 0] = self.alphabet.cls_idx
            tokens[row, 1 : len(seq) + 1] = torch.tensor([self._lookup[a] for a in seq])
            tokens[row, len(seq) + 1] = self.alphabet.eos_idx
            maskable[row, 1 : len(seq) + 1] = True
        return tokens, maskable

    @staticmethod
    def logits(module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return module(tokens)["logits"]  # B x T x V

    def file_name(self, step: int) -> str:
        # fair-esm's local loader dispatches on the file stem: it must start with "esm2"
        name = str(self.arch["name"])
        return f"{name if name.startswith('esm2') else 'esm2_' + name}_step{step}.pt"

    def save(self, module: nn.Module, path: Path, meta: dict) -> list[Path]:
        """fair-esm's ESM-2 format, plus the ``-contact-regression.pt`` its local loader reads.

        The contact head is not trained by the MLM loss: its regression weights are the
        initial ones, saved so that ``load_model_and_alphabet_local`` accepts the file.
        """
        regression = ("contact_head.regression.weight", "contact_head.regression.bias")
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        args = self.constructor_args()
        model_cfg = Namespace(  # the fields fair-esm's v2 loader reads
            encoder_layers=args["num_layers"],
            encoder_embed_dim=args["embed_dim"],
            encoder_attention_heads=args["attention_heads"],
            token_dropout=args["token_dropout"],
        )
        body = {"encoder." + k: v for k, v in state.items() if k not in regression}
        head = {k: state[k] for k in regression}
        regression_path = path.with_name(path.stem + "-contact-regression.pt")
        _atomic_save({"model": head}, regression_path)
        _atomic_save({"model": body, "cfg": {"model": model_cfg}, "ptransfer": meta}, path)
        return [path, regression_path]


class CarpAdapter:
    """CARP: sequence-models ``ByteNetLM`` wrapped in ``CARP``; no BOS/EOS, '#' mask, '-' pad."""

    family = "carp"
    n_special = 0
    ARCH_KEYS = ("d_embed", "d_model", "n_layers", "kernel_size", "r", "slim", "activation")
    SHAPE_KEYS = ("n_layers", "d_model")  # -> model config n_blocks, dim

    def __init__(self, arch: dict) -> None:
        from sequence_models.constants import MASK, PAD, PROTEIN_ALPHABET

        self.arch = arch
        name = str(arch.get("name"))
        # sequence-models dispatches on the saved 'model' name: it must contain 'carp' and must
        # not contain 'big' (read as a BiG-CARP checkpoint) or 'mif'
        self.model_name = name if "carp" in name else f"carp_{name}"
        if "big" in self.model_name or "mif" in self.model_name:
            raise ValueError(f"arch.name={name!r}: a CARP name must not contain 'big' or 'mif'")
        self.mask_idx = PROTEIN_ALPHABET.index(MASK)
        self.pad_idx = PROTEIN_ALPHABET.index(PAD)
        self.canonical_ids = torch.tensor([PROTEIN_ALPHABET.index(a) for a in CANONICAL])
        self._lookup = {a: PROTEIN_ALPHABET.index(a) for a in RESIDUES}
        self.n_tokens = len(PROTEIN_ALPHABET)

    def build(self) -> nn.Module:
        from sequence_models.convolutional import ByteNetLM
        from sequence_models.pretrained import CARP

        # the same constructor call as sequence_models.pretrained.load_carp
        a = self.constructor_args()
        net = ByteNetLM(
            self.n_tokens, a["d_embed"], a["d_model"], a["n_layers"], a["kernel_size"], a["r"],
            dropout=0.0, activation=a["activation"], causal=False, padding_idx=self.mask_idx,
            final_ln=True, slim=a["slim"],
        )
        return CARP(net, pad_idx=self.pad_idx)

    def constructor_args(self) -> dict:
        """The checkpoint fields ``load_carp`` builds from: a conf/model CARP ``arch`` block."""
        return _pick(self.arch, self.ARCH_KEYS)

    def tokenize(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens B x L_max, maskable B x L_max (True on residues only)."""
        width = max(len(s) for s in sequences)
        tokens = torch.full((len(sequences), width), self.pad_idx, dtype=torch.long)
        for row, seq in enumerate(sequences):
            tokens[row, : len(seq)] = torch.tensor([self._lookup[a] for a in seq])
        return tokens, tokens != self.pad_idx

    @staticmethod
    def logits(module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return module(tokens, repr_layers=[], logits=True)["logits"]  # B x T x V

    def file_name(self, step: int) -> str:
        # sequence-models dispatches on the saved 'model' name, not on the file name
        return f"{self.arch['name']}_step{step}.pt"

    def save(self, module: nn.Module, path: Path, meta: dict) -> list[Path]:
        """The dict ``sequence_models.pretrained.load_carp`` reads."""
        data = {
            "model": self.model_name,
            **self.constructor_args(),
            "model_state_dict": {k: v.detach().cpu() for k, v in module.model.state_dict().items()},
            "ptransfer": meta,
        }
        _atomic_save(data, path)
        return [path]


ADAPTERS = {"esm2": EsmAdapter, "carp": CarpAdapter}


def make_adapter(arch: dict) -> EsmAdapter | CarpAdapter:
    """The adapter for ``arch['family']`` (``esm2`` or ``carp``)."""
    family = arch.get("family")
    if family not in ADAPTERS:
        raise ValueError(f"arch.family={family!r}: expected one of {sorted(ADAPTERS)}")
    return ADAPTERS[family](arch)


def _pick(arch: dict, keys: tuple[str, ...]) -> dict:
    missing = [k for k in keys if k not in arch]
    if missing:
        raise ValueError(f"arch ({arch.get('family')}) lacks key(s) {missing}")
    return {k: arch[k] for k in keys}


def _atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
