"""A cell's per-item predictions, in the schema of ``analysis.predictions``.

Each layer's probe returns, per eval set, predictions for the rows it scored (labelled rows
only: per-residue ``IGNORE`` residues are never predicted or scored), with the index of each
row's sequence in its split and the residue position. Here they become Parquet blocks keyed
by ``item_id(sequence)`` so that two cells on the same data pair item by item.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer.analysis.predictions import (
    PREDICTIONS_FILE,
    item_id,
    predictions_frame,
    write_predictions,
)
from ptransfer.heads.fit_layers import LayerFit
from ptransfer.tasks.base import Task


def prediction_blocks(task: Task, fits: list[LayerFit]) -> list[pd.DataFrame]:
    """One block per (layer, eval set) with item ids, positions, targets and predictions."""
    ids = {name: np.array([item_id(s) for s in split.sequences], dtype=object)
           for name, split in task.splits.items()}
    classification = task.kind == "classification"
    blocks = []
    for fit in fits:
        if set(fit.predictions) != set(fit.scores):
            raise ValueError(f"layer {fit.layer}: predictions for {sorted(fit.predictions)} "
                             f"but scores for {sorted(fit.scores)}")
        for eval_set, pred in fit.predictions.items():
            blocks.append(predictions_frame(
                eval_set, fit.layer, ids[eval_set][pred.rows], pred.positions, pred.y_true,
                pred.y_pred, proba=pred.proba, classification=classification))
    return blocks


def write_cell_predictions(task: Task, fits: list[LayerFit], cell_dir: Path) -> Path:
    """Write ``cell_dir/predictions.parquet`` (atomically); returns its path."""
    path = cell_dir / PREDICTIONS_FILE
    write_predictions(prediction_blocks(task, fits), path)
    return path
