"""Per-residue probes for every layer without caching per-residue features.

ESM-2 650M over secondary-structure training data is ~34 layers x 1280 dims x millions of
residues: hundreds of GB even in float16. Instead, one forward pass over train accumulates
per-layer sufficient statistics (moments, X^T X, X^T Y) of a ridge classifier; one pass over
val records every alpha's predictions; one pass over each test set scores the alpha chosen on
val. Memory is O(layers x dim^2); nothing per residue is kept but int8 predictions.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ptransfer.embed.extract import embed_sequences
from ptransfer.embed.settings import ExtractSettings
from ptransfer.encoders.base import Encoder
from ptransfer.heads.fit_layers import EvalPredictions, LayerFit, make_probe, score_all
from ptransfer.heads.spec import HeadSpec
from ptransfer.tasks.base import IGNORE, Task

log = logging.getLogger(__name__)


def _labelled_batches(encoder: Encoder, task: Task, split: str, extract: ExtractSettings):
    """Yield (features n_layers x R x D float32, labels R, sequence index R, position R) of the
    labelled residues, batch by batch (batches come in the extractor's length order).

    Any encoder with ``embed`` works, the one-hot baseline included: it has nothing to load
    beyond its fixed table, so the same probe serves every encoder of a per-residue task.
    """
    split_data = task.splits[split]
    for indices, tensors in embed_sequences(
        encoder,
        split_data.sequences,
        toks_per_batch=extract.toks_per_batch,
        length_policy=extract.length_policy,
        precision=extract.precision,
        progress=extract.progress,
    ):
        feats = torch.cat(list(tensors), dim=1).numpy()  # n_layers x R x D
        labels = np.concatenate([split_data.targets[i] for i in indices]).astype(np.int64)
        rows = np.concatenate([np.full(len(split_data.targets[i]), i) for i in indices])
        positions = np.concatenate([np.arange(len(split_data.targets[i])) for i in indices])
        keep = labels != IGNORE
        yield feats[:, keep], labels[keep], rows[keep], positions[keep]


def _predictions(encoder: Encoder, task: Task, split: str, extract: ExtractSettings, predict):
    """Concatenate ``predict(layer_feats_all_layers)`` over a split.

    Returns (predictions ... x R, labels R, sequence index R, position R).
    """
    preds, labels, rows, positions = [], [], [], []
    for feats, y, row, position in _labelled_batches(encoder, task, split, extract):
        preds.append(predict(feats))
        labels.append(y)
        rows.append(row)
        positions.append(position)
    return (np.concatenate(preds, axis=-1), np.concatenate(labels), np.concatenate(rows),
            np.concatenate(positions))


def fit_streaming(encoder: Encoder, task: Task, head: HeadSpec,
                  extract: ExtractSettings) -> list[LayerFit]:
    """Streaming ridge-classifier probes on every layer; alpha per layer chosen on val."""
    probes = [make_probe("streaming", head, task, seed=0, device="cpu")
              for _ in range(encoder.n_layers)]
    alphas = probes[0].alphas
    n_train = 0
    for feats, y, _, _ in _labelled_batches(encoder, task, "train", extract):
        for layer, probe in enumerate(probes):
            probe.partial_fit(feats[layer], y)
        n_train += len(y)
    for probe in probes:
        probe.finalize()
    log.info("streaming probe: accumulated %d training residues", n_train)

    def all_alphas(feats):  # -> n_layers x n_alphas x R int8
        return np.stack(
            [p.decision_path(feats[i]).argmax(-1).astype(np.int8) for i, p in enumerate(probes)]
        )

    val_pred, y_val, *val_index = _predictions(encoder, task, "val", extract, all_alphas)
    chosen = [_choose_alpha(val_pred[layer], y_val) for layer in range(encoder.n_layers)]
    for probe, a in zip(probes, chosen):
        probe.select(a)

    def chosen_alpha(feats):  # -> n_layers x R int8
        return np.stack([p.predict(feats[i]).astype(np.int8) for i, p in enumerate(probes)])

    tests = {s: _predictions(encoder, task, s, extract, chosen_alpha) for s in task.test_sets}
    fits = []
    for layer, a in enumerate(chosen):
        scores = {"val": score_all(task, y_val, val_pred[layer, a])}
        n_eval = {"val": len(y_val)}
        predictions = {"val": EvalPredictions(*val_index, y_val, val_pred[layer, a])}
        for name, (pred, y, rows, positions) in tests.items():
            scores[name] = score_all(task, y, pred[layer])
            n_eval[name] = len(y)
            predictions[name] = EvalPredictions(rows, positions, y, pred[layer])
        fits.append(LayerFit(layer, {"alpha": alphas[a]}, scores, n_train, n_eval, predictions))
    return fits


def _choose_alpha(pred_per_alpha: np.ndarray, y: np.ndarray) -> int:
    """Index of the alpha with the best validation accuracy (ties: the larger alpha)."""
    acc = (pred_per_alpha == y[None, :]).mean(axis=1)
    return int(len(acc) - 1 - np.argmax(acc[::-1]))
