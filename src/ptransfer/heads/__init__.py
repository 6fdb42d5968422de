"""Probes fitted on one layer's features, hyper-parameters chosen on validation only.

- ``RidgeProbe``: per-protein regression, every alpha from one eigendecomposition.
- ``LogisticProbe``: per-protein classification (multinomial logistic, scikit-learn).
- ``SoftmaxProbe``: per-residue classification, linear softmax by minibatch AdamW (torch).
- ``StreamingRidgeClassifier`` / ``StreamingScorer``: per-residue ridge classifier from
  streamed sufficient statistics, every alpha at once.

Fitting them, one per layer (``conf/head/*.yaml`` names each estimator as ``_target_``):

- ``spec``: ``HeadSpec``, the head config a cell hands down (plain values, no Hydra).
- ``fit_layers``: which probe a task gets, one fit per layer from stored features, scores.
- ``fit_streaming``: the per-cell driver of the streaming probe: passes over the encoder's
  output (train, val, each test set) with no per-residue cache.
- ``cross_validation``: the layer and hyper-parameters chosen by k-fold cross-validation
  over train and validation (``selection.method=cv``), each layer's probe refit on both.

All estimators follow the scikit-learn estimator contract (``__init__`` stores parameters, ``fit``
returns self, learned state ends in ``_``) and expose ``selected_params_``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use: ``ptransfer.heads.fit_layers`` (the head rule a cell
# needs to key a cell) must not pull in torch and scikit-learn for a cell that is skipped.
_EXPORTS = {
    "CrossValidatedSelection": "ptransfer.heads.cross_validation",
    "DEFAULT_CS": "ptransfer.heads.logistic",
    "LogisticProbe": "ptransfer.heads.logistic",
    "DEFAULT_ALPHAS": "ptransfer.heads.ridge",
    "RidgeProbe": "ptransfer.heads.ridge",
    "select_best": "ptransfer.heads.selection",
    "HeadSpec": "ptransfer.heads.spec",
    "DEFAULT_WEIGHT_DECAYS": "ptransfer.heads.softmax",
    "SoftmaxProbe": "ptransfer.heads.softmax",
    "StreamingRidgeClassifier": "ptransfer.heads.streaming_ridge",
    "StreamingScorer": "ptransfer.heads.streaming_ridge",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
