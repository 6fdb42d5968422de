"""Probes fitted on one layer's features, hyper-parameters chosen on validation only.

- ``RidgeProbe``: per-protein regression, every alpha from one eigendecomposition.
- ``LogisticProbe``: per-protein classification (multinomial logistic, scikit-learn).
- ``SoftmaxProbe``: per-residue classification, linear softmax by minibatch AdamW (torch).
- ``StreamingRidgeClassifier`` / ``StreamingScorer``: per-residue ridge classifier from
  streamed sufficient statistics, every alpha at once.

All follow the scikit-learn estimator contract (``__init__`` stores parameters, ``fit``
returns self, learned state ends in ``_``) and expose ``selected_params_``.
"""

from ptransfer.heads.logistic import DEFAULT_CS, LogisticProbe
from ptransfer.heads.ridge import DEFAULT_ALPHAS, RidgeProbe
from ptransfer.heads.selection import select_best
from ptransfer.heads.softmax import DEFAULT_WEIGHT_DECAYS, SoftmaxProbe
from ptransfer.heads.streaming import StreamingRidgeClassifier, StreamingScorer

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
