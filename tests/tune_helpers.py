"""Shared pieces of the fine-tuning tests: tiny models of every torch family, toy tasks.

``write_weights`` saves one tiny model per family in its real format (fair-esm and CARP
checkpoints, transformers ``save_pretrained`` folders with their tokenizers); ``load`` builds
a fresh encoder from them the way a cell does (fine-tuning changes the module in place, so
every fit gets its own). Toy tasks are small enough for a fit in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
from hf_models import HF_FAMILIES, build_hf, hf_model_config, write_pretrained
from omegaconf import OmegaConf
from tiny_models import model_config, write_tiny

from ptransfer.encoders.base import CheckpointRef
from ptransfer.tasks.base import Split, Task

FAIR_ESM = ("esm2", "esm1b", "esm1")
TORCH_FAMILIES = (*FAIR_ESM, "carp", *HF_FAMILIES)
LORA_FAMILIES = tuple(f for f in TORCH_FAMILIES if f != "carp")


def write_weights(root: Path) -> dict[str, Path]:
    """One tiny model per torch family under ``root``: family -> file or folder."""
    paths = {family: write_tiny(family, root) for family in (*FAIR_ESM, "carp")}
    for family in HF_FAMILIES:
        paths[family] = write_pretrained(build_hf(family), root / family, family)
    return paths


def load(family: str, paths: dict[str, Path], ablation: str = "pretrained", seed: int = 0,
         **overrides):
    """A freshly loaded encoder of ``family`` (as the cell instantiates and loads it)."""
    make = hf_model_config if family in HF_FAMILIES else model_config
    # random_init reads no weights; the folder still gives transformers models a tokenizer
    config = OmegaConf.create(make(family, weights=str(paths[family]), **overrides))
    encoder = hydra.utils.instantiate(config, _convert_="all")
    return encoder.load(CheckpointRef(), ablation=ablation, seed=seed)


def random_sequences(rng: np.random.Generator, n: int, length: int,
                     alphabet: str = "AKRE") -> list[str]:
    return ["".join(rng.choice(list(alphabet), size=length)) for _ in range(n)]


def toy_task(label, sizes=(60, 20, 20), length: int = 16, seed: int = 0,
             kind: str = "regression", alphabet: str = "AKRE") -> Task:
    """A protein-level task whose target is ``label(sequence)`` (metric spearman, or
    accuracy for classification with classes from the labels' values)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in zip(("train", "val", "test"), sizes):
        sequences = random_sequences(rng, n, length, alphabet)
        values = np.array([label(s) for s in sequences],
                          dtype=float if kind == "regression" else np.int64)
        splits[name] = Split(sequences, values)
    if kind == "regression":
        return Task("toy", "protein", kind, splits, "toy", "spearman")
    classes = [str(c) for c in range(int(max(s.targets.max() for s in splits.values())) + 1)]
    return Task("toy", "protein", kind, splits, "toy", "accuracy", classes=classes)


def count_k(sequence: str) -> float:
    return float(sequence.count("K"))


def count_kr(sequence: str) -> float:
    """Occurrences of the dipeptide KR: a local pattern, not a function of composition."""
    return float(sum(a == "K" and b == "R" for a, b in zip(sequence, sequence[1:])))
