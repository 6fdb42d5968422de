"""Fit one probe per layer, select hyper-parameters on validation, score every eval set.

The probe estimators live in ``ptransfer.heads``; this module only decides which one a
task gets, feeds it the rows that carry a label (per-residue ``IGNORE`` rows never reach a
probe or a metric), turns predictions into metric values and returns them per scored row
(``EvalPredictions``: sequence index, residue position, target, prediction) for the cell's
predictions file.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field

import hydra
import numpy as np

from ptransfer import metrics
from ptransfer.heads.backend import one_thread
from ptransfer.heads.rules import AUTO_HEADS, HEADS_ALLOWED, head_for  # noqa: F401 - API
from ptransfer.heads.spec import HeadSpec
from ptransfer.tasks.base import IGNORE, Task

log = logging.getLogger(__name__)

RESIDUE_METRICS = ["accuracy", "macro_f1"]  # per residue: no ROC-AUC (streaming has no probabilities)


def resolve_head(head: HeadSpec, task: Task) -> str:
    """The probe a cell uses: ``head.name`` unless it is ``auto`` (see conf/head/auto.yaml)."""
    return head_for(head.name, task.level, task.kind, task.name)


def task_metrics(task: Task) -> list[str]:
    return RESIDUE_METRICS if task.level == "residue" else metrics.METRICS[task.kind]


# What a cell knows at run time and a probe may ask for by naming it in its ``__init__``.
RUNTIME_ARGS = ("metric", "n_classes", "seed", "device")


def make_probe(name: str, head: HeadSpec, task: Task, seed: int, device: str):
    """A fresh, unfitted estimator for one layer, built from ``head.<name>._target_``.

    The config gives the estimator's own parameters (grids, learning rate, ...); the cell's
    run-time values (the task's main metric and class count, the seed, the device) are added
    for exactly the parameters the estimator's ``__init__`` names.
    """
    node = head.probe_config(name)
    cls = hydra.utils.get_class(node["_target_"])
    runtime = {"metric": task.metric, "n_classes": task.n_classes, "seed": seed,
               "device": device}
    accepted = inspect.signature(cls.__init__).parameters
    extra = {k: v for k, v in runtime.items() if k in accepted and k not in node}
    return hydra.utils.instantiate(node, **extra, _convert_="all")


@dataclass
class EvalPredictions:
    """A probe's predictions on one eval set, one entry per scored row (labelled rows only).

    ``rows`` (R) indexes the split's sequences, ``positions`` (R) is the residue index (-1 per
    protein), ``y_true`` / ``y_pred`` (R) targets and predictions (class indices for
    classification), ``proba`` (R x C) class probabilities where a metric needs them
    (per-protein classification: roc_auc), else None.
    """

    rows: np.ndarray
    positions: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray | None = None


@dataclass
class LayerFit:
    """What one layer's probe produced: chosen hyper-parameters, scores and predictions."""

    layer: int
    hparams: dict
    scores: dict[str, dict[str, float]]  # eval_set -> metric -> value
    n_train: int
    n_eval: dict[str, int]
    predictions: dict[str, EvalPredictions] = field(default_factory=dict)  # eval_set -> ...


def labelled(X: np.ndarray, y: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Drop per-residue rows whose label is IGNORE (unresolved residues).

    Per protein nothing is dropped: ``IGNORE`` (-1) is a per-residue class sentinel, and a
    regression target may well be -1.0.
    """
    if level != "residue":
        return X, y
    keep = y != IGNORE
    if keep.all():
        return X, y
    return X[keep], y[keep]


def row_index(task: Task, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(sequence index, position) of every labelled row of ``split``, as ``labelled`` keeps them.

    Per protein: (0..N-1, -1 each); per residue: one entry per residue not labelled IGNORE.
    """
    data = task.splits[split]
    if task.level != "residue":
        return np.arange(len(data)), np.full(len(data), -1, dtype=np.int64)
    lengths = np.array([len(t) for t in data.targets], dtype=np.int64)
    rows = np.repeat(np.arange(len(data)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(int(lengths.sum())) - starts
    keep = data.flat_targets() != IGNORE
    return rows[keep], positions[keep]


def score_all(task: Task, y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of the task; ``pred`` is values (regression) or probabilities / labels."""
    return {name: float(metrics.score(name, y_true, pred)) for name in task_metrics(task)}


def _hard_labels(probe, proba: np.ndarray) -> np.ndarray:
    """Predicted class index per row from N x C probabilities (columns = ``probe.classes_``)."""
    classes = getattr(probe, "classes_", None)
    picked = np.argmax(proba, axis=1)
    return picked if classes is None else np.asarray(classes)[picked]


def evaluate(task: Task, eval_set: str, y: np.ndarray, pred: np.ndarray, probe
             ) -> tuple[dict[str, float], EvalPredictions]:
    """Every metric of one eval set's predictions (values, or N x C probabilities) and the
    rows for the predictions file."""
    rows, positions = row_index(task, eval_set)
    if task.kind == "regression":
        return score_all(task, y, pred), EvalPredictions(rows, positions, y, pred)
    keep_proba = "roc_auc" in task_metrics(task)
    return score_all(task, y, pred), EvalPredictions(
        rows, positions, y, _hard_labels(probe, pred), pred if keep_proba else None)


def fit_layer(probe, layer: int, task: Task, get) -> LayerFit:
    """Fit ``probe`` on train (selecting on val) with ``get(split) -> X`` and score all sets.

    Fitting and scoring run on one CPU thread (``backend.one_thread``): the values do not
    depend on the thread count of the process, hence not on how a sweep placed the cell.
    """
    with one_thread():
        return _fit_layer(probe, layer, task, get)


def _fit_layer(probe, layer: int, task: Task, get) -> LayerFit:
    X_tr, y_tr = labelled(get("train"), task.splits["train"].flat_targets(), task.level)
    X_va, y_va = labelled(get("val"), task.splits["val"].flat_targets(), task.level)
    probe.fit(X_tr, y_tr, X_va, y_va)
    scores, n_eval, predictions = {}, {}, {}
    for eval_set in ["val", *task.test_sets]:
        if eval_set == "val":
            X, y = X_va, y_va
        else:
            X, y = labelled(get(eval_set), task.splits[eval_set].flat_targets(), task.level)
        pred = probe.predict(X) if task.kind == "regression" else probe.predict_proba(X)
        scores[eval_set], predictions[eval_set] = evaluate(task, eval_set, y, pred, probe)
        n_eval[eval_set] = int(len(y))
    return LayerFit(layer, dict(probe.selected_params_), scores, int(len(y_tr)), n_eval,
                    predictions)
