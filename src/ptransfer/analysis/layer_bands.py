"""The band of a depth curve: a 95 % bootstrap interval per layer when there is one seed.

A depth figure draws, per (model, ablation), the test metric of the probe on every layer.
With two or more seeds its band is ±1 sd over seeds; with one seed an sd does not exist,
so the band is the 95 % percentile bootstrap interval of that cell's score at each layer,
over test proteins (resampled with replacement; the residues of a per-residue task move
with their protein), from the cell's ``predictions.parquet``:

- accuracy (per residue or per protein): from per-protein correct and scored counts, one
  matrix product per layer (resample counts x proteins);
- Spearman, Pearson, MSE (per protein): rows of resampled items, ranked per row
  (``scipy.stats.rankdata``, average ties as ``metrics.spearman``);
- any other metric: ``metrics.score`` per resample.

``N_RESAMPLES`` (200) resamples per layer, seeded by the cell and layer, so a rerun draws the
same band. A curve whose items x layers x resamples exceed ``WORK_BUDGET`` gets its band at
``DEPTH_POINTS`` evenly spaced layers only (AAV: 81,413 items x 57 CARP layers), so the
report stays minutes at paper scale.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ptransfer import metrics

N_RESAMPLES = 200
LEVEL = 0.95
WORK_BUDGET = 2e8  # items x layers x resamples of one curve with a band at every layer
DEPTH_POINTS = 9
# Metrics computable from y_pred (roc_auc needs class probabilities: no band).
FROM_PREDICTIONS = ("spearman", "pearson", "mse", "ndcg", "accuracy", "macro_f1")


def band_layers(n_layers: int, n_items: int, n_resamples: int = N_RESAMPLES) -> list[int]:
    """Every layer, or ``DEPTH_POINTS`` evenly spaced ones (first and last) over budget."""
    if n_layers * n_items * n_resamples <= WORK_BUDGET:
        return list(range(n_layers))
    return sorted({int(round(x)) for x in np.linspace(0, n_layers - 1, DEPTH_POINTS)})


def _resample_counts(n_proteins: int, n_resamples: int, seed: int) -> np.ndarray:
    """B x P: how often each protein is drawn in each resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_proteins, size=(n_resamples, n_proteins))
    counts = np.zeros((n_resamples, n_proteins), dtype=np.int32)
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1)
    return counts


def _replicates(block: pd.DataFrame, metric: str, n_resamples: int, seed: int) -> np.ndarray:
    """``n_resamples`` bootstrap values of ``metric`` on one layer's predictions."""
    if metric not in FROM_PREDICTIONS:
        return np.array([])  # needs class probabilities (roc_auc): no band
    proteins, codes = np.unique(block["item"].astype(str).to_numpy(), return_inverse=True)
    counts = _resample_counts(len(proteins), n_resamples, seed)
    y_true, y_pred = block["y_true"].to_numpy(), block["y_pred"].to_numpy()
    if metric == "accuracy":
        correct = np.bincount(codes, weights=(y_true == y_pred), minlength=len(proteins))
        scored = np.bincount(codes, minlength=len(proteins))
        return (counts @ correct) / np.maximum(counts @ scored, 1)
    if (block["position"] >= 0).any():  # per residue, another metric: one call per resample
        rows_of = [np.flatnonzero(codes == p) for p in range(len(proteins))]
        index = [np.concatenate([np.repeat(rows_of[p], c[p]) for p in np.flatnonzero(c)])
                 for c in counts]
    else:  # per protein: item p is row rows[p]
        rows = np.empty(len(proteins), dtype=np.int64)
        rows[codes] = np.arange(len(codes))
        index = np.array([np.repeat(rows, c) for c in counts])  # B x P
    if metric in ("spearman", "pearson", "mse"):
        a, b = y_true[index].astype(float), y_pred[index].astype(float)
        if metric == "mse":
            return ((a - b) ** 2).mean(axis=1)
        if metric == "spearman":
            a, b = rankdata(a, axis=1), rankdata(b, axis=1)
        a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.array([metrics.score(metric, y_true[i], y_pred[i]) for i in index])


def layer_intervals(path: str | Path, eval_set: str, metric: str, layers: list[int],
                    n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """Per layer of ``layers``: ``ci_low``, ``ci_high`` of ``metric`` on ``eval_set`` from
    one cell's predictions file (layers it lacks are absent)."""
    frame = pd.read_parquet(path, filters=[("eval_set", "==", eval_set),
                                           ("layer", "in", sorted(layers))])
    out = []
    tail = (1 - LEVEL) / 2
    for layer, block in frame.groupby("layer", sort=True):
        seed = zlib.crc32(f"{Path(path).parent.name}|{eval_set}|{layer}".encode())
        values = _replicates(block, metric, n_resamples, seed)
        values = values[np.isfinite(values)]
        if len(values):
            low, high = np.quantile(values, [tail, 1 - tail])
            out.append({"layer": int(layer), "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=["layer", "ci_low", "ci_high"])
