"""One cell, end to end: task x encoder (checkpoint, ablation, seed) x head, every layer.

``run_cell(cfg)`` is the door: it reads the composed config once into a ``CellSpec``
(``cell.spec``) and everything after takes the spec. The cell writes
``results_dir/cells/<cell_id>/`` (``cell.key``) with ``config.yaml`` (the resolved config),
``rows.csv`` (long-format rows), ``predictions.parquet`` (per-item predictions) and
``status.json`` (done / failed, with the traceback; done records each result file's rows,
size and SHA-256). Where ``selection`` asks for cross-validation (``cv``, or ``auto`` below
``min_val_items`` validation proteins), the same layers with the layer and
hyper-parameters chosen by k-fold CV over train and validation are written beside, as the
cell ``<cell_id>__cv`` (rows with ``selection`` = ``cv``), before the cell's own status says
done: a cell is never done without it.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ptransfer.analysis.cell_files import file_record, parquet_rows
from ptransfer.analysis.predictions import PREDICTIONS_FILE
from ptransfer.analysis.rows import ROWS_FILE, write_rows
from ptransfer.cell.encoder import cell_encoder, pick_device
from ptransfer.cell.key import CONFIG_FILE, CellKey, cell_key, encoder_identity
from ptransfer.cell.spec import CellSpec, cell_spec
from ptransfer.cell.status import running_status, start_heartbeat, write_status
from ptransfer.cell.task_data import (
    FINGERPRINT_CHARS,
    check_declared_shape,
    load_task,
    remember_fingerprint,
)

log = logging.getLogger(__name__)


def run_cell(cfg: DictConfig, lease=None) -> pd.DataFrame:
    """Run the cell of a composed config and write its files; raises on failure (the sweep
    records it). ``lease``: the device the sweep gave this job (``sweep.devices``); None:
    ``extract.device`` as given."""
    return run_cell_spec(cell_spec(cfg), OmegaConf.to_yaml(cfg, resolve=True), lease)


def run_cell_spec(spec: CellSpec, config_yaml: str, lease=None) -> pd.DataFrame:
    """Run one cell from its spec (``config_yaml``: the resolved config it records).

    The task is loaded first: its content fingerprint is part of the key.
    """
    from ptransfer.cell.config_checks import check_before_load

    task = load_task(spec.task, spec.results_dir)
    check_declared_shape(spec.task, task)
    fingerprint = remember_fingerprint(spec.task, spec.results_dir, task)
    key = cell_key(spec, fingerprint)
    started = time.time()
    log.info("task %s, data fingerprint %s", task.summary(), fingerprint[:FINGERPRINT_CHARS])
    check_before_load(spec, task)  # what needs no model weights: nothing on disk yet
    device = pick_device(lease.torch_device if lease is not None else spec.extract.device)
    device_name = lease.name if lease is not None else device
    write_status(key.dir, **running_status(key.cell_id, started), device=device_name)
    start_heartbeat(key.dir)
    (key.dir / CONFIG_FILE).write_text(config_yaml)
    frame, loaded = _fit_and_write(spec, key, task, fingerprint, device,
                                   lease.describe() if lease else device)
    files = {ROWS_FILE: file_record(key.dir / ROWS_FILE, len(frame)),
             PREDICTIONS_FILE: file_record(key.dir / PREDICTIONS_FILE,
                                           parquet_rows(key.dir / PREDICTIONS_FILE))}
    note = {} if frame.best_layer.any() else {"note": (
        f"no best layer: every layer's validation {task.metric} is NaN (e.g. constant or "
        f"too few validation targets); no row has best_layer=True")}
    write_status(key.dir, state="done", cell_id=key.cell_id, started=started,
                 seconds=round(time.time() - started, 2), n_rows=len(frame), files=files,
                 device=device_name, model_loaded=loaded, **note)
    return frame


def _fit_and_write(spec: CellSpec, key: CellKey, task, fingerprint: str, device: str,
                   where: str) -> tuple[pd.DataFrame, bool]:
    """Load (or configure) the encoder, fit every layer, write rows and predictions."""
    from ptransfer.cell.fit import layer_fits
    from ptransfer.cell.memory import check_memory
    from ptransfer.cell.predictions import write_cell_predictions
    from ptransfer.cell.rows import rows_from_fits
    from ptransfer.heads.fit_layers import resolve_head

    head = resolve_head(spec.head, task)
    encoder, ref, loaded = cell_encoder(spec, task, head, device,
                                        encoder_identity(spec.encoder))  # weights if it runs
    log.info("encoder %s (%d layers x %d), checkpoint %s, ablation %s, seed %s, head %s, "
             "device %s", encoder.name, encoder.n_layers, encoder.dim, ref.name,
             spec.encoder.ablation, spec.seed, head, where)
    check_memory(task, encoder, head)  # one-hot width and memory; refuses what cannot fit
    fits = layer_fits(spec, task, encoder, head, device)
    frame = rows_from_fits(spec, key, task, encoder, ref, head, fits, fingerprint)
    write_rows(frame, key.dir / ROWS_FILE)
    write_cell_predictions(task, fits, key.dir)
    if spec.selection.cross_validates(len(task.splits["val"]), head):
        _write_cross_validated(spec, key, task, encoder, ref, head, fingerprint, device)
    return frame, loaded


def _write_cross_validated(spec: CellSpec, key: CellKey, task, encoder, ref, head: str,
                           fingerprint: str, device: str) -> None:
    """The cell's layers with the layer and hyper-parameters chosen by cross-validation,
    as the complete cell ``<cell_id>__cv`` (rows, predictions, a done status)."""
    from ptransfer.cell.fit import cv_layer_fits
    from ptransfer.cell.predictions import write_cell_predictions
    from ptransfer.cell.rows import rows_from_fits

    started = time.time()
    fits, best = cv_layer_fits(spec, task, encoder, head, device)
    sibling = key.cross_validated()
    frame = rows_from_fits(spec, sibling, task, encoder, ref, head, fits, fingerprint,
                           best).assign(selection="cv")
    write_rows(frame, sibling.dir / ROWS_FILE)
    predictions = write_cell_predictions(task, fits, sibling.dir)
    files = {ROWS_FILE: file_record(sibling.dir / ROWS_FILE, len(frame)),
             PREDICTIONS_FILE: file_record(predictions, parquet_rows(predictions))}
    write_status(sibling.dir, state="done", cell_id=sibling.cell_id, started=started,
                 seconds=round(time.time() - started, 2), n_rows=len(frame), files=files,
                 selection="cv", folds=spec.selection.folds, of=key.cell_id)
