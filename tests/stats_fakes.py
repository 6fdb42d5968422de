"""Hand-built cells for the statistics tests: rows.csv + predictions.parquet, values computed
by ``ptransfer.metrics`` from the predictions written (so rows and predictions agree).

A cell's predictions are ``y_true * signal + noise`` (per protein regression, Spearman) or
"correct with probability p" (per residue 3-class accuracy, clustered by protein); ``signal``
/ ``p`` may depend on the layer and the eval set, which is how tests set up depth,
checkpoint, size and per-test-set trends. Cells given one ``noise_key`` share a fraction
``shared`` of their noise variance, as checkpoints of one model make correlated errors.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ptransfer import metrics
from ptransfer.analysis.cell_files import file_record, parquet_rows
from ptransfer.analysis.predictions import (
    PREDICTIONS_FILE,
    item_id,
    predictions_frame,
    write_predictions,
)
from ptransfer.analysis.rows import COLUMNS, ROWS_FILE, make_frame, write_rows
from ptransfer.cell.status import write_status

EVAL_SETS = ("val", "test")


def protein_task(n: int, seed: int = 0, eval_sets=EVAL_SETS, sizes: dict | None = None
                 ) -> dict:
    """Items and targets of a per-protein regression task (per eval set): ``n`` proteins
    each, or ``sizes[eval_set]``."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, eval_set in enumerate(eval_sets):
        m = (sizes or {}).get(eval_set, n)
        items = np.array([item_id(f"P{k}_{i}") for i in range(m)])
        out[eval_set] = (items, np.full(m, -1), rng.normal(size=m))
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


def _shared_noise(noise_key, eval_set: str, n: int) -> np.ndarray | None:
    """The noise every cell (and layer) of one ``noise_key`` shares on an eval set."""
    if noise_key is None:
        return None
    return np.random.default_rng(zlib.crc32(f"{noise_key}|{eval_set}".encode())).normal(size=n)


def _predict(task: dict, eval_set: str, quality: float, rng, noise_key=None,
             shared: float = 0.0) -> np.ndarray:
    _, positions, y_true = task[eval_set]
    if positions[0] < 0:  # regression: signal + unit noise (a fraction shared by noise_key)
        noise = rng.normal(size=len(y_true))
        common = _shared_noise(noise_key, eval_set, len(y_true))
        if common is not None:
            noise = np.sqrt(shared) * common + np.sqrt(1.0 - shared) * noise
        return y_true * quality + noise
    correct = rng.random(len(y_true)) < quality
    return np.where(correct, y_true, (y_true + rng.integers(1, 3, len(y_true))) % 3)


def _quality(quality, layer: int, eval_set: str) -> float:
    """``quality``: a number, ``f(layer)``, or {eval_set: number or f(layer)}."""
    if isinstance(quality, dict):
        quality = quality[eval_set] if eval_set in quality else quality["val"]
    return quality(layer) if callable(quality) else quality


def write_cell(root: Path, task_name: str, task: dict, quality, *, model="m", family="esm2",
               n_params=10, checkpoint="final", step=np.nan, fraction=np.nan, order=np.nan,
               ablation="pretrained", scope="full", seed=0, n_layers=3, head="ridge",
               head_config="hc", precision="fp32", length_policy="window",
               pooled_dtype="float32", revision="", fingerprint="fp", predictions=True,
               noise_key=None, shared=0.9, constant=(), name=None,
               tune="frozen", selection="val") -> pd.DataFrame:
    """One cell: ``quality`` (see ``_quality``) sets each layer's prediction quality;
    ``constant``: eval sets whose predictions are constant (an undefined Spearman);
    ``tune``: lora | full writes a fine-tune cell (its last layer only, head ``mlp``)."""
    if tune != "frozen":  # a fine-tune cell's head and config (the hash of its settings)
        head, head_config = "mlp", f"{tune}-{head_config}"
    residue = task[next(e for e in task if e != "val")][1][0] >= 0
    metric = "accuracy" if residue else "spearman"
    score = metrics.accuracy if residue else metrics.spearman
    cell_id = name or (f"{task_name}-{model}-{checkpoint}-{ablation}-{scope}-{seed}-{head}-"
                       f"{head_config}-{precision}-{fingerprint}") + "__cv" * (selection == "cv")
    rng = np.random.default_rng(zlib.crc32(cell_id.encode()))
    blocks, values = [], {}
    for layer in range(0 if tune == "frozen" else n_layers - 1, n_layers):
        for eval_set in task:
            items, positions, y_true = task[eval_set]
            y_pred = _predict(task, eval_set, _quality(quality, layer, eval_set), rng,
                              noise_key, shared)
            if eval_set in constant:
                y_pred = np.zeros_like(y_pred)
            with np.errstate(invalid="ignore", divide="ignore"):
                values[(layer, eval_set)] = score(y_true, y_pred)
            blocks.append(predictions_frame(eval_set, layer, items, positions, y_true, y_pred,
                                            classification=residue))
    defined = [layer for layer in range(n_layers)
               if np.isfinite(values.get((layer, "val"), np.nan))]
    best = max(defined, key=lambda layer: values[(layer, "val")]) if defined else None
    rows = []
    for (layer, eval_set), value in values.items():
        row = dict.fromkeys(COLUMNS)
        row.update(model=model, family=family, n_params=n_params, checkpoint=checkpoint,
                   checkpoint_step=step, checkpoint_fraction=fraction, checkpoint_order=order,
                   ablation=ablation, ablation_scope=scope, seed=seed,
                   task=task_name, dataset="fake", level="residue" if residue else "protein",
                   layer=layer, n_layers=n_layers, rel_depth=layer / max(n_layers - 1, 1),
                   revision=revision, precision=precision, length_policy=length_policy,
                   pooled_dtype=pooled_dtype, data_fingerprint=fingerprint, head=head,
                   head_config=head_config,
                   hparams=json.dumps({}), eval_set=eval_set, metric=metric, value=value,
                   n_train=10, n_eval=len(task[eval_set][0]), best_layer=layer == best,
                   main_metric=True, cell_id=cell_id, config_hash="h", ptransfer_version="t")
        rows.append(row)
    frame = make_frame(rows).assign(selection=selection)  # an optional column, as tune
    if tune != "frozen":  # a fine-tune cell's optional column (analysis.rows.OPTIONAL_COLUMNS)
        frame = frame.assign(tune=tune)
    cell_dir = Path(root) / "cells" / cell_id
    write_rows(frame, cell_dir / ROWS_FILE)
    files = {ROWS_FILE: file_record(cell_dir / ROWS_FILE, len(frame))}
    if predictions:
        write_predictions(blocks, cell_dir / PREDICTIONS_FILE)
        files[PREDICTIONS_FILE] = file_record(cell_dir / PREDICTIONS_FILE,
                                              parquet_rows(cell_dir / PREDICTIONS_FILE))
    write_status(cell_dir, state="done", cell_id=cell_id, files=files)  # as a cell does
    return frame
