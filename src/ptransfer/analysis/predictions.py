"""Per-item predictions: the schema every cell writes beside its rows, paired across cells.

One row per (eval_set, layer, item, position): the probe's prediction for one test item (a
protein, or one scored residue of a protein) and its true target. Items pair across cells by
``item`` (the SHA-256 of the protein sequence, hex, the embedding store's key) and
``position`` (residue index in the protein; -1 for per-protein tasks), so two cells on the same
data can be compared item by item (paired bootstrap). Intervals resample *proteins*
(``item``), also for per-residue tasks, because residues of one protein are not independent.

Stored as Parquet (columnar, dictionary-encoded ids, small integer classes):

    eval_set   string (dictionary)   val, test, cb513, ...
    layer      int16                 layer index
    item       string (dictionary)   SHA-256 hex of the protein sequence
    position   int32                 residue index (0-based), -1 for per-protein tasks
    y_true     float32 | int16       regression target, or class index
    y_pred     float32 | int16       regression prediction, or predicted class index
    proba_<k>  float32               class probabilities, only where a metric needs them
                                     (per-protein classification: roc_auc)
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer.analysis.rows import read_checked

PREDICTIONS_FILE = "predictions.parquet"
KEY = ["eval_set", "layer", "item", "position"]
BASE_COLUMNS = [*KEY, "y_true", "y_pred"]
PROTEIN_POSITION = -1


def item_id(sequence: str) -> str:
    """The pairing id of a protein: SHA-256 hex of its sequence (as the embedding store keys)."""
    return hashlib.sha256(sequence.encode()).hexdigest()


def predictions_frame(eval_set: str, layer: int, items: np.ndarray, positions: np.ndarray,
                      y_true: np.ndarray, y_pred: np.ndarray,
                      proba: np.ndarray | None = None, classification: bool = False
                      ) -> pd.DataFrame:
    """One block of predictions (one eval set, one layer) in the stored dtypes.

    ``items``, ``positions``, ``y_true`` and ``y_pred`` are aligned 1-D arrays of equal length
    (``positions`` all -1 per protein); ``proba`` is N x K or None.
    """
    n = len(items)
    for name, values in (("positions", positions), ("y_true", y_true), ("y_pred", y_pred)):
        if len(values) != n:
            raise ValueError(f"predictions for {eval_set} layer {layer}: {name} has "
                             f"{len(values)} entries, items has {n}")
    value_dtype = np.int16 if classification else np.float32
    frame = pd.DataFrame({
        "eval_set": pd.Categorical([eval_set] * n) if n else pd.Categorical([]),
        "layer": np.full(n, layer, dtype=np.int16),
        "item": pd.Categorical(np.asarray(items, dtype=object)),
        "position": np.asarray(positions, dtype=np.int32),
        "y_true": np.asarray(y_true).astype(value_dtype),
        "y_pred": np.asarray(y_pred).astype(value_dtype),
    })
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float32)
        for k in range(proba.shape[1]):
            frame[f"proba_{k}"] = proba[:, k]
    return frame


def write_predictions(blocks: list[pd.DataFrame], path: Path) -> None:
    """Concatenate blocks and write atomically (a reader never sees half a file)."""
    frame = pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame(columns=BASE_COLUMNS)
    for column in ("eval_set", "item"):
        frame[column] = frame[column].astype("category")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # private
    try:
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a cell's predictions, checking the schema's columns; names the file on error."""
    return read_checked(path, pd.read_parquet, BASE_COLUMNS, "predictions file")
