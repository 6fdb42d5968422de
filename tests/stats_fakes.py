"""Hand-built cells for the statistics tests: rows.csv + predictions.parquet, values computed
by ``ptransfer.metrics`` from the predictions written (so rows and predictions agree).

A cell's predictions are ``y_true * signal + noise`` (per protein regression, Spearman) or
"correct with probability p" (per residue 3-class accuracy, clustered by protein); ``signal``
/ ``p`` may depend on the layer, which is how tests set up depth, checkpoint and size trends.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer import metrics
from ptransfer.analysis.predictions import (
    PREDICTIONS_FILE,
    item_id,
    predictions_frame,
    write_predictions,
)
from ptransfer.analysis.rows import COLUMNS, ROWS_FILE, make_frame, write_rows

EVAL_SETS = ("val", "test")


def protein_task(n: int, seed: int = 0) -> dict:
    """Items and targets of a per-protein regression task (per eval set)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, eval_set in enumerate(EVAL_SETS):
        items = np.array([item_id(f"P{k}_{i}") for i in range(n)])
        out[eval_set] = (items, np.full(n, -1), rng.normal(size=n))
    return out


def residue_task(n_proteins: int, seed: int = 0) -> dict:
    """Items (proteins), positions and 3-class targets of a per-residue task."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, eval_set in enumerate(EVAL_SETS):
        lengths = rng.integers(20, 80, size=n_proteins)
        items = np.repeat([item_id(f"R{k}_{i}") for i in range(n_proteins)], lengths)
        positions = np.concatenate([np.arange(n) for n in lengths])
        out[eval_set] = (items, positions, rng.integers(0, 3, size=lengths.sum()))
    return out


def _predict(task: dict, eval_set: str, quality: float, rng) -> np.ndarray:
    _, positions, y_true = task[eval_set]
    if positions[0] < 0:  # regression: signal + unit noise
        return y_true * quality + rng.normal(size=len(y_true))
    correct = rng.random(len(y_true)) < quality
    return np.where(correct, y_true, (y_true + rng.integers(1, 3, len(y_true))) % 3)


def write_cell(root: Path, task_name: str, task: dict, quality, *, model="m", family="esm2",
               n_params=10, checkpoint="final", step=np.nan, ablation="pretrained", seed=0,
               n_layers=3, head="ridge", precision="fp32", fingerprint="fp",
               predictions=True) -> pd.DataFrame:
    """One cell: ``quality(layer)`` (or a number) sets each layer's prediction quality."""
    residue = task["test"][1][0] >= 0
    metric = "accuracy" if residue else "spearman"
    score = metrics.accuracy if residue else metrics.spearman
    cell_id = f"{task_name}-{model}-{checkpoint}-{ablation}-{seed}-{head}-{precision}"
    rng = np.random.default_rng(zlib.crc32(cell_id.encode()))
    blocks, values = [], {}
    for layer in range(n_layers):
        q = quality(layer) if callable(quality) else quality
        for eval_set in EVAL_SETS:
            items, positions, y_true = task[eval_set]
            y_pred = _predict(task, eval_set, q, rng)
            values[(layer, eval_set)] = score(y_true, y_pred)
            blocks.append(predictions_frame(eval_set, layer, items, positions, y_true, y_pred,
                                            classification=residue))
    best = max(range(n_layers), key=lambda layer: values[(layer, "val")])
    rows = []
    for (layer, eval_set), value in values.items():
        row = dict.fromkeys(COLUMNS)
        row.update(model=model, family=family, n_params=n_params, checkpoint=checkpoint,
                   checkpoint_step=step, ablation=ablation, ablation_scope="full", seed=seed,
                   task=task_name, dataset="fake", level="residue" if residue else "protein",
                   layer=layer, n_layers=n_layers, rel_depth=layer / max(n_layers - 1, 1),
                   revision="", precision=precision, data_fingerprint=fingerprint, head=head,
                   hparams=json.dumps({}), eval_set=eval_set, metric=metric, value=value,
                   n_train=10, n_eval=len(task[eval_set][0]), best_layer=layer == best,
                   main_metric=True, cell_id=cell_id, config_hash="h", ptransfer_version="t")
        rows.append(row)
    frame = make_frame(rows)
    cell_dir = Path(root) / "cells" / cell_id
    write_rows(frame, cell_dir / ROWS_FILE)
    if predictions:
        write_predictions(blocks, cell_dir / PREDICTIONS_FILE)
    return frame
