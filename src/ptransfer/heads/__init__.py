"""Probes fitted on one layer's features, hyper-parameters chosen on validation only.

- ``RidgeProbe``: per-protein regression, every alpha from one eigendecomposition.
- ``LogisticProbe``: per-protein classification (multinomial logistic, scikit-learn).
- ``SoftmaxProbe``: per-residue classification, linear softmax by minibatch AdamW (torch).
- ``StreamingRidgeClassifier`` / ``StreamingScorer``: per-residue ridge classifier from
  streamed sufficient statistics, every alpha at once.

Fitting them, one per layer (``conf/head/*.yaml`` names each estimator as ``_target_``):

- ``fit_layers``: which probe a task gets, one fit per layer from stored features, scores.
- ``fit_streaming``: the per-cell driver of the streaming probe: passes over the encoder's
  output (train, val, each test set) with no per-residue cache.

All estimators follow the scikit-learn estimator contract (``__init__`` stores parameters, ``fit``
returns self, learned state ends in ``_``) and expose ``selected_params_``.
"""

from ptransfer.heads.logistic import DEFAULT_CS, LogisticProbe
from ptransfer.heads.ridge import DEFAULT_ALPHAS, RidgeProbe
from ptransfer.heads.selection import select_best
from ptransfer.heads.softmax import DEFAULT_WEIGHT_DECAYS, SoftmaxProbe
from ptransfer.heads.streaming_ridge import StreamingRidgeClassifier, StreamingScorer

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_CS",
    "DEFAULT_WEIGHT_DECAYS",
    "LogisticProbe",
    "RidgeProbe",
    "SoftmaxProbe",
    "StreamingRidgeClassifier",
    "StreamingScorer",
    "select_best",
]
