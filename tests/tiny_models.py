"""Tiny ESM-2, ESM-1b, ESM-1 and CARP models, saved in their packages' real checkpoint formats.

Tests load weights along the same path as real ones: each tiny model is built with the
package's own classes, every parameter is perturbed ("as if pretrained": no tensor sits at
its constructor's value, so an ablation that forgets one is caught), and it is saved as the
dict the package's loader reads:

- ESM-2 (fair-esm v2): ``{"model": state with "encoder.sentence_encoder." / "encoder."
  prefixes, "cfg": {"model": Namespace(encoder_layers, encoder_embed_dim,
  encoder_attention_heads, token_dropout)}}`` as ``esm2_*.pt`` (fair-esm dispatches on the
  stem) plus ``<stem>-contact-regression.pt`` holding ``{"model": contact head state}``;
- ESM-1b / ESM-1 (fair-esm v1): ``{"model": prefixed state, "args": Namespace(arch, ...)}``;
- CARP (sequence-models): ``{"model": "carp_...", d_embed, d_model, n_layers, kernel_size,
  activation, slim, r, "model_state_dict": ByteNetLM state}``.

Sizes: 2 blocks, width 16-32, so building, saving and loading take milliseconds.
"""

from __future__ import annotations

import shutil
from argparse import Namespace
from pathlib import Path

import torch
from esm.data import Alphabet
from esm.model.esm1 import ProteinBertModel
from esm.model.esm2 import ESM2
from sequence_models.constants import MASK, PROTEIN_ALPHABET
from sequence_models.convolutional import ByteNetLM
from torch import nn

from ptransfer.encoders.carp import carp_n_params
from ptransfer.encoders.esm import esm_n_params

TINY_ARCH: dict[str, dict] = {
    "esm2": {"num_layers": 2, "embed_dim": 32, "attention_heads": 4, "token_dropout": True},
    "esm1b": {
        "arch": "roberta_large", "layers": 2, "embed_dim": 32, "ffn_embed_dim": 64,
        "attention_heads": 4, "max_positions": 64, "emb_layer_norm_before": True,
        "token_dropout": True,
    },
    "esm1": {
        "arch": "protein_bert_base", "layers": 2, "embed_dim": 32, "ffn_embed_dim": 64,
        "attention_heads": 4, "final_bias": True, "token_dropout": False,
    },
    "carp": {
        "d_embed": 8, "d_model": 16, "n_layers": 2, "kernel_size": 5, "r": 128, "slim": True,
        "activation": "gelu",
    },
}  # fmt: skip
TINY_NAMES = {
    "esm2": "esm2_t2_tiny_UR50D",
    "esm1b": "esm1b_t2_tiny_UR50S",
    "esm1": "esm1_t2_tiny_UR50S",
    "carp": "carp_tiny",
}
TINY_MAX_LEN = {"esm2": 1022, "esm1b": 62, "esm1": 1022, "carp": 4096}  # esm1b: 64 positions
TARGETS = {
    "esm2": "ptransfer.encoders.esm.EsmEncoder",
    "esm1b": "ptransfer.encoders.esm.EsmEncoder",
    "esm1": "ptransfer.encoders.esm.EsmEncoder",
    "carp": "ptransfer.encoders.carp.CarpEncoder",
}


def build_module(family: str, arch: dict | None = None) -> nn.Module:
    """The package's own module for ``family`` (CARP: the ``ByteNetLM`` its checkpoints hold)."""
    arch = dict(TINY_ARCH[family] if arch is None else arch)
    if family == "esm2":
        return ESM2(alphabet="ESM-1b", **arch)
    if family in ("esm1b", "esm1"):
        alphabet = Alphabet.from_architecture(arch["arch"])
        return ProteinBertModel(Namespace(**arch), alphabet)
    return ByteNetLM(
        len(PROTEIN_ALPHABET), arch["d_embed"], arch["d_model"], arch["n_layers"],
        arch["kernel_size"], arch["r"], dropout=0.0, activation=arch["activation"],
        causal=False, padding_idx=PROTEIN_ALPHABET.index(MASK), final_ln=True, slim=arch["slim"],
    )  # fmt: skip


@torch.no_grad()
def perturb_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Add N(0, 0.1^2) noise to every parameter (seeded): "trained" weights, all distinct."""
    generator = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return module


def build_pretrained(family: str, seed: int = 0) -> nn.Module:
    """A tiny module of ``family`` with perturbed ("pretrained") parameters."""
    with torch.random.fork_rng(devices=[]):
        module = build_module(family)
    return perturb_(module, seed)


def _esm_state(module: nn.Module, body_prefix: str, head_prefix: str) -> tuple[dict, dict]:
    """Split a fair-esm state dict into (prefixed model state, contact regression state).

    Values stay views of the parameters, so ``torch.save`` stores the tied embedding and LM
    head weight once, as in real checkpoints (fair-esm's ESM-1b loader zeroes the mask row of
    one and relies on the other following).
    """
    model_state, regression_state = {}, {}
    for key, value in module.state_dict().items():
        if key.startswith("contact_head."):
            regression_state[key] = value
        elif key.startswith("lm_head."):
            model_state[head_prefix + key] = value
        else:
            model_state[body_prefix + key] = value
    return model_state, regression_state


def write_checkpoint(family: str, module: nn.Module, path: Path, regression: bool = True) -> Path:
    """Save ``module`` at ``path`` in ``family``'s checkpoint format; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arch = TINY_ARCH[family]
    if family == "carp":
        torch.save({"model": path.stem, **arch, "model_state_dict": module.state_dict()}, path)
        return path
    if family == "esm2":
        state, regression_state = _esm_state(module, "encoder.sentence_encoder.", "encoder.")
        cfg = Namespace(
            encoder_layers=arch["num_layers"], encoder_embed_dim=arch["embed_dim"],
            encoder_attention_heads=arch["attention_heads"], token_dropout=arch["token_dropout"],
        )  # fmt: skip
        data = {"model": state, "cfg": {"model": cfg}}
    elif family == "esm1b":
        state, regression_state = _esm_state(module, "encoder.sentence_encoder.", "encoder.")
        renamed = {"layers", "embed_dim", "ffn_embed_dim", "attention_heads"}
        args = {(f"encoder_{k}" if k in renamed else k): v for k, v in arch.items()}
        args.pop("emb_layer_norm_before")  # fair-esm infers it from the state keys
        data = {"model": state, "args": Namespace(**args)}
    else:
        state, regression_state = _esm_state(module, "decoder.", "decoder.")
        data = {"model": state, "args": Namespace(**arch)}
    torch.save(data, path)
    if regression:
        torch.save({"model": regression_state}, regression_path(path))
    return path


def regression_path(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.stem}-contact-regression.pt")


def write_tiny(family: str, directory: Path, seed: int = 0, name: str | None = None) -> Path:
    """Build, perturb and save a tiny ``family`` model in ``directory``; returns the .pt path."""
    path = Path(directory) / f"{name or TINY_NAMES[family]}.pt"
    return write_checkpoint(family, build_pretrained(family, seed), path)


def install_in_hub_cache(model_path: Path) -> Path:
    """Copy a checkpoint (and its contact regression, if any) into the torch hub cache."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    for source in (model_path, regression_path(model_path)):
        if source.is_file():
            shutil.copy(source, cache / source.name)
    return cache / model_path.name


def model_config(family: str, **overrides) -> dict:
    """A conf/model-style dict for the tiny ``family`` model (``_target_`` included)."""
    arch = TINY_ARCH[family]
    carp = family == "carp"
    config = {
        "_target_": TARGETS[family],
        "name": TINY_NAMES[family],
        "family": family,
        "n_blocks": arch["n_layers"] if carp else arch.get("num_layers", arch.get("layers")),
        "dim": arch["d_model"] if carp else arch["embed_dim"],
        "n_params": carp_n_params(arch) if carp else esm_n_params(family, arch),
        "max_len": TINY_MAX_LEN[family],
        "arch": dict(arch),
        "weights": None,
        "checkpoints": {},
    }
    config.update(overrides)
    return config


def tiny_esm2_searchpath(root: Path) -> str:
    """A Hydra search path override adding ``model=tiny_esm2`` (written under ``root``)."""
    import yaml

    conf = root / "extra_conf" / "model"
    conf.mkdir(parents=True)
    (conf / "tiny_esm2.yaml").write_text(yaml.safe_dump(model_config("esm2", name="tiny_esm2")))
    return f"hydra.searchpath=[file://{conf.parent}]"
