"""Every value of a ``ptransfer pretrain`` config, checked before anything runs.

A training run takes hours and Hydra types nothing: ``schedule.max_steps=-1`` used to
"finish" at once, ``schedule.lr=-1`` failed deep in AdamW as "Invalid learning rate" and
``schedule.max_steps=abc`` as ``invalid literal for int()``, none naming the key.
:func:`check_pretrain_values` runs on the composed config (``ptransfer pretrain`` before
Hydra starts, and again at the start of every run) and raises ``ValueError`` naming the
first bad key, its value and what it accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from ptransfer.pretrain.mlm import MaskingRates


def _integer(value, low: int | None = None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and (low is None or value >= low))


def _number(value) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _betas(value) -> bool:
    return (isinstance(value, list | tuple) and len(value) == 2
            and all(_number(b) and 0.0 <= b < 1.0 for b in value))


def _steps(value) -> bool:
    return isinstance(value, list | tuple) and all(_integer(s, 0) for s in value)


# key -> (test, what it accepts)
RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "schedule.max_steps": (lambda v: _integer(v, 1), "an integer >= 1"),
    "schedule.lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "schedule.warmup_steps": (lambda v: _integer(v, 0), "an integer >= 0"),
    "schedule.decay": (lambda v: v in ("cosine", "linear"), "cosine or linear"),
    "schedule.min_lr_ratio": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "schedule.weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "schedule.betas": (_betas, "two numbers in [0, 1), e.g. [0.9, 0.98]"),
    "schedule.clip_norm": (lambda v: _number(v) and v > 0, "a number > 0"),
    "schedule.toks_per_batch": (lambda v: _integer(v, 1), "an integer >= 1"),
    "schedule.max_batch_size": (lambda v: v is None or _integer(v, 1),
                                "null or an integer >= 1"),
    "schedule.checkpoints": (_steps, "a list of integer steps >= 0, e.g. [0, 100]"),
    "schedule.save_every": (lambda v: v is None or _integer(v, 0), "null or an integer >= 0"),
    "mlm.select": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "mlm.to_mask": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "mlm.to_random": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "mlm.val_seed": (lambda v: _integer(v, 0), "an integer >= 0"),
    "data.max_len": (lambda v: _integer(v, 1), "an integer >= 1"),
    "data.val_fraction": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "data.max_val_sequences": (lambda v: _integer(v, 1), "an integer >= 1"),
    "data.split_seed": (lambda v: _integer(v, 0), "an integer >= 0"),
    "seed": (lambda v: _integer(v, 0), "an integer >= 0"),
    "device": (lambda v: isinstance(v, str) and (v in ("auto", "cpu") or v.startswith("cuda")),
               "auto, cpu, cuda or cuda:N"),
    "precision": (lambda v: v in ("auto", "fp32", "bf16"), "auto, fp32 or bf16"),
    "cpu_threads": (lambda v: v is None or _integer(v, 1), "null or an integer >= 1"),
}


def _lookup(cfg: Mapping, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(f"config key {key!r} is missing")
        node = node[part]
    return node


def check_pretrain_values(cfg: Mapping) -> None:
    """Raise ``ValueError`` naming the first key of :data:`RULES` whose value ``cfg`` (the
    composed pretrain config, plain or OmegaConf) does not accept; then the masking rates
    together (``to_mask + to_random <= 1``) and the device with the precision."""
    for key, (accepts, expected) in RULES.items():
        value = _lookup(cfg, key)
        if hasattr(value, "_content"):  # an OmegaConf list: compare its plain values
            value = list(value)
        if not accepts(value):
            raise ValueError(f"config key {key!r}: expected {expected}, got {value!r}")
    mlm = cfg["mlm"]
    MaskingRates(float(mlm["select"]), float(mlm["to_mask"]), float(mlm["to_random"]))
    pick_device(str(cfg["device"]), str(cfg["precision"]))


def pick_device(device: str, precision: str) -> tuple[torch.device, torch.dtype | None]:
    """(device, autocast dtype or None for fp32). bf16 autocast is CUDA only."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"config key 'device': {device!r}, but this torch has no CUDA device "
                         "(use device=cpu or auto)")
    dev = torch.device(device)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={precision!r}: expected auto, fp32 or bf16")
    if precision == "bf16" and dev.type != "cuda":
        raise ValueError("precision=bf16 needs a CUDA device (device=cuda); use fp32 on CPU")
    return dev, (torch.bfloat16 if precision == "bf16" else None)
