"""Fit one probe per layer, select hyper-parameters on validation, score every eval set.

The probe estimators live in ``ptransfer.heads``; this module only decides which one a
task gets, feeds it the rows that carry a label (per-residue ``IGNORE`` rows never reach a
probe or a metric) and turns predictions into metric values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ptransfer import metrics
from ptransfer.heads import LogisticProbe, RidgeProbe, SoftmaxProbe
from ptransfer.tasks.base import IGNORE, Task

log = logging.getLogger(__name__)

RESIDUE_METRICS = ["accuracy", "macro_f1"]  # per residue: no ROC-AUC (streaming has no probabilities)


def resolve_head(head_cfg, task: Task, n_params: int) -> str:
    """The probe a cell uses: ``head.name`` unless it is ``auto`` (see conf/head/auto.yaml)."""
    name = head_cfg.name
    if name != "auto":
        _check_head_fits(name, task)
        return name
    if task.level == "residue":
        return "streaming" if n_params >= head_cfg.streaming_min_params else "linear"
    return "ridge" if task.kind == "regression" else "logistic"


def _check_head_fits(name: str, task: Task) -> None:
    allowed = {
        ("protein", "regression"): {"ridge"},
        ("protein", "classification"): {"logistic", "linear"},
        ("residue", "classification"): {"linear", "streaming"},
    }.get((task.level, task.kind), set())
    if name not in allowed:
        raise ValueError(
            f"head={name} does not fit task {task.name!r} ({task.level} {task.kind}); "
            f"choose one of {sorted(allowed)} or head=auto"
        )


def task_metrics(task: Task) -> list[str]:
    return RESIDUE_METRICS if task.level == "residue" else metrics.METRICS[task.kind]


def grid_kwarg(key: str, values) -> dict:
    """``{key: grid}`` for a configured grid; ``{}`` when null keeps the estimator's default."""
    return {} if values is None else {key: tuple(float(v) for v in values)}


def make_probe(name: str, head_cfg, task: Task, seed: int, device: str):
    """A fresh, unfitted estimator for one layer."""
    if name == "ridge":
        return RidgeProbe(metric=task.metric, device=device,
                          **grid_kwarg("alphas", head_cfg.ridge.alphas))
    if name == "logistic":
        return LogisticProbe(metric=task.metric, seed=seed, max_iter=head_cfg.logistic.max_iter,
                             n_classes=task.n_classes, **grid_kwarg("Cs", head_cfg.logistic.Cs))
    if name == "linear":
        lin = head_cfg.linear
        return SoftmaxProbe(lr=lin.lr, batch_size=lin.batch_size, max_epochs=lin.max_epochs,
                            patience=lin.patience, n_classes=task.n_classes, seed=seed,
                            device=device, **grid_kwarg("weight_decays", lin.weight_decays))
    raise ValueError(f"unknown head {name!r}")


@dataclass
class LayerFit:
    """What one layer's probe produced: chosen hyper-parameters and per-eval-set scores."""

    layer: int
    hparams: dict
    scores: dict[str, dict[str, float]]  # eval_set -> metric -> value
    n_train: int
    n_eval: dict[str, int]


def labelled(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop per-residue rows whose label is IGNORE (unresolved residues)."""
    keep = y != IGNORE
    if keep.all():
        return X, y
    return X[keep], y[keep]


def score_all(task: Task, y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of the task; ``pred`` is values (regression) or probabilities / labels."""
    return {name: float(metrics.score(name, y_true, pred)) for name in task_metrics(task)}


def fit_layer(probe, layer: int, task: Task, get) -> LayerFit:
    """Fit ``probe`` on train (selecting on val) with ``get(split) -> X`` and score all sets."""
    X_tr, y_tr = labelled(get("train"), task.splits["train"].flat_targets())
    X_va, y_va = labelled(get("val"), task.splits["val"].flat_targets())
    probe.fit(X_tr, y_tr, X_va, y_va)
    scores, n_eval = {}, {}
    for eval_set in ["val", *task.test_sets]:
        if eval_set == "val":
            X, y = X_va, y_va
        else:
            X, y = labelled(get(eval_set), task.splits[eval_set].flat_targets())
        pred = probe.predict(X) if task.kind == "regression" else probe.predict_proba(X)
        scores[eval_set] = score_all(task, y, pred)
        n_eval[eval_set] = int(len(y))
    return LayerFit(layer, dict(probe.selected_params_), scores, int(len(y_tr)), n_eval)
