"""A cell's probes with the layer and hyper-parameters chosen by cross-validation.

``fit_cv_layers`` is ``fit_layer`` for every layer under ``selection=cv``
(``cross_validation``): the labelled rows of train and validation together are the CV pool
(the residues of a protein stay in its fold); each layer's probe is refit on the whole pool
at the value its CV chose and scored on every test set. Its ``val`` entry is honest though
validation was trained on: the *out-of-fold* predictions of the validation rows (each from
the fold probe that did not see it) and their metrics. The best layer is the CV choice
(``CrossValidatedSelection.best_layer_``), not the best ``val`` entry (40 validation
proteins are what CV is there to outvote).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ptransfer.heads.backend import one_thread
from ptransfer.heads.cross_validation import CrossValidatedSelection
from ptransfer.heads.fit_layers import LayerFit, evaluate, labelled, row_index
from ptransfer.tasks.base import IGNORE, Task


class _Pool:
    """The CV pool of one task: train then validation rows (labelled only), read lazily."""

    def __init__(self, task: Task, get: Callable[[int, str], np.ndarray], n_layers: int):
        self.task, self.get, self.n_layers = task, get, n_layers
        y = [task.splits[s].flat_targets() for s in ("train", "val")]
        self.keep = [t != IGNORE if task.level == "residue" else np.ones(len(t), bool)
                     for t in y]
        self.y = np.concatenate([t[k] for t, k in zip(y, self.keep)])
        train_seq, _ = row_index(task, "train")
        val_seq, _ = row_index(task, "val")
        self.groups = np.concatenate([train_seq, val_seq + len(task.splits["train"])])
        self.val_rows = np.arange(len(train_seq), len(self.y))

    def __len__(self) -> int:
        return self.n_layers

    def __getitem__(self, layer: int) -> np.ndarray:  # N x D of train + val
        if not 0 <= layer < self.n_layers:
            raise IndexError(layer)
        parts = [self.get(layer, s)[k] for s, k in zip(("train", "val"), self.keep)]
        return np.concatenate(parts)


def fit_cv_layers(probe, task: Task, get: Callable[[int, str], np.ndarray], n_layers: int,
                  n_folds: int, seed: int) -> tuple[list[LayerFit], int]:
    """(one fit per layer, the CV-chosen layer). ``probe``: an unfitted probe (its grid is
    searched); ``get(layer, split)``: that split's features of ``layer`` (N x D). On one CPU
    thread, as ``fit_layer``: the values do not depend on the process's thread count."""
    with one_thread():
        return _fit_cv_layers(probe, task, get, n_layers, n_folds, seed)


def _fit_cv_layers(probe, task: Task, get, n_layers: int, n_folds: int,
                   seed: int) -> tuple[list[LayerFit], int]:
    pool = _Pool(task, get, n_layers)
    selector = CrossValidatedSelection(probe, n_folds=n_folds, seed=seed).fit(
        pool, pool.y, pool.groups)
    fits = []
    for layer in range(n_layers):
        X = pool[layer]
        final = selector.refit(layer, X, pool.y)
        y_val = pool.y[pool.val_rows]
        scores, predictions, n_eval = {}, {}, {}
        oof = selector.out_of_fold(layer, X, pool.y, pool.val_rows)
        scores["val"], predictions["val"] = evaluate(task, "val", y_val, oof, final)
        n_eval["val"] = int(len(y_val))
        for eval_set in task.test_sets:
            X_test, y = labelled(get(layer, eval_set), task.splits[eval_set].flat_targets(),
                                   task.level)
            pred = final.predict(X_test) if task.kind == "regression" else \
                final.predict_proba(X_test)
            scores[eval_set], predictions[eval_set] = evaluate(task, eval_set, y, pred, final)
            n_eval[eval_set] = int(len(y))
        fits.append(LayerFit(layer, dict(final.selected_params_), scores, int(len(pool.y)),
                             n_eval, predictions))
    return fits, selector.best_layer_
