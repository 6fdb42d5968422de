"""One grid cell, end to end: task x encoder (checkpoint, ablation, seed) x head, every layer.

A cell is keyed by the hash of its effective config (what changes its numbers: task config
and the fingerprint of the task's loaded content, model and the fingerprint of the weights
it reads, checkpoint, ablation, seed, head, length policy, precision), never by folder
names or job numbers. It writes
``results_dir/cells/<cell_id>/`` with ``config.yaml`` (the resolved config), ``rows.csv``
(long-format rows), ``predictions.parquet`` (per-item predictions) and ``status.json`` (done /
failed, with the traceback; done records each result file's rows, size and SHA-256), and a
re-run skips a cell whose status says done and whose rows and predictions match that record
(``analysis.cell_files``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ptransfer import __version__
from ptransfer.analysis.cell_files import file_problem, file_record, parquet_rows
from ptransfer.analysis.predictions import PREDICTIONS_FILE
from ptransfer.analysis.rows import ROWS_FILE, make_frame, write_rows
from ptransfer.encoders.weights_fingerprint import weights_fingerprint
from ptransfer.grid.row_fields import config_fields
from ptransfer.grid.status import (  # noqa: F401 - STATUS_FILE, read_status: cell's API
    STATUS_FILE,
    read_status,
    running_status,
    start_heartbeat,
    write_status,
)
from ptransfer.grid.task_data import (
    FINGERPRINT_CHARS,
    check_declared_shape,
    load_task,
    remember_fingerprint,
    task_fingerprint,
)
from ptransfer.metrics import HIGHER_IS_BETTER
from ptransfer.tasks.base import Task

# torch, the encoders, embed and the heads (sklearn) are imported where a cell runs, not
# here: a re-run of a finished sweep only keys and skips its cells, and importing them
# would be most of its cost (docs/benchmarks.md, tests/test_done_sweep.py).
if TYPE_CHECKING:
    from ptransfer.encoders.base import CheckpointRef, Encoder
    from ptransfer.heads.fit_layers import LayerFit

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
UNAVAILABLE = "unavailable: "  # the data fingerprint of a task that cannot be loaded
RESULT_FILES = (ROWS_FILE, PREDICTIONS_FILE)  # recorded (rows, bytes, SHA-256) in status.json
# Keys that do not change a cell's numbers, left out of its hash.
_TASK_KEYS_IGNORED = ("root",)


@dataclass(frozen=True)
class CellKey:
    cell_id: str
    config_hash: str
    dir: Path


def data_fingerprint(cfg: DictConfig) -> str:
    """The task's content fingerprint (memoised, see grid/task_data.py).

    A task that cannot be loaded (data missing) gets a placeholder: its cell is then never
    done, and running it fails with the loader's own error, recorded under this key.
    """
    try:
        return task_fingerprint(cfg)
    except Exception as err:  # noqa: BLE001 - any loader error (logged once): the run reports it
        return f"{UNAVAILABLE}{type(err).__name__}"


def weights_key(cfg: DictConfig) -> str | None:
    """The content fingerprint of the weights the cell reads (None: it reads none), memoised
    in ``results_dir`` (encoders/weights_fingerprint.py)."""
    return weights_fingerprint(OmegaConf.to_container(cfg.model, resolve=True),
                               str(cfg.checkpoint), cfg.ablation.name,
                               cfg.ablation.get("scope", "full"), cfg.results_dir)


def effective_config(cfg: DictConfig, fingerprint: str | None = None) -> dict:
    """The part of the config that determines the cell's rows (``fingerprint``: the task's
    content fingerprint, looked up when not given)."""
    task = OmegaConf.to_container(cfg.task, resolve=True)
    for key in _TASK_KEYS_IGNORED:
        task.pop(key, None)
    effective = {
        "task": task,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "checkpoint": cfg.checkpoint,
        "ablation": cfg.ablation.name,
        "ablation_scope": cfg.ablation.get("scope", "full"),
        "seed": int(cfg.seed),
        "head": OmegaConf.to_container(cfg.head, resolve=True),
        "length_policy": cfg.extract.length_policy,
        "subsample": OmegaConf.to_container(cfg.subsample) if cfg.subsample else None,
        "precision": cfg.extract.precision,
        "data": fingerprint if fingerprint is not None else data_fingerprint(cfg),
        "weights": weights_key(cfg),
    }
    pooled = cfg.extract.get("pooled_dtype", "float32")
    if pooled != "float32":  # float16 storage changes the numbers; the default keeps old keys
        effective["pooled_dtype"] = pooled
    return effective


def cell_key(cfg: DictConfig, fingerprint: str | None = None) -> CellKey:
    blob = json.dumps(effective_config(cfg, fingerprint), sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    name = "__".join(
        [cfg.task.name, cfg.model.name, str(cfg.checkpoint), cfg.ablation.name, f"s{cfg.seed}"]
    )
    cell_id = f"{name}__{digest[:10]}"
    return CellKey(cell_id, digest[:16], Path(cfg.results_dir) / "cells" / cell_id)


def is_done(key: CellKey) -> bool:
    """Status done, and rows and predictions exactly as that status recorded them."""
    return file_problem(key.dir, read_status(key.dir), RESULT_FILES) is None


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def checkpoint_ref(cfg: DictConfig) -> CheckpointRef:
    """``checkpoint=final`` or a key of ``model.checkpoints`` ({path, step}), with its step."""
    from ptransfer.encoders.base import CheckpointRef
    from ptransfer.encoders.weights import resolve_checkpoint

    node = cfg.model.get("checkpoints")
    known = OmegaConf.to_container(node, resolve=True) if node else {}
    name = str(cfg.checkpoint)
    if name == "final":
        return CheckpointRef("final", (known.get("final") or {}).get("step"))
    return resolve_checkpoint(CheckpointRef(name), known)


def load_encoder(cfg: DictConfig, device: str) -> tuple[Encoder, CheckpointRef]:
    encoder: Encoder = hydra.utils.instantiate(cfg.model, _convert_="all")
    ref = checkpoint_ref(cfg)
    encoder.load(ref, ablation=cfg.ablation.name, seed=int(cfg.seed),
                 scope=cfg.ablation.get("scope", "full"))
    return encoder.to(device), ref


def encoder_identity(cfg: DictConfig) -> dict:
    """What makes two cells' embeddings the same: keys the shared HDF5 store.

    The seed and the ablation scope only matter to seeded ablations: pretrained embeddings
    are shared across seeds and scopes. The model config hash covers the architecture and the
    weights' path, ``weights`` their content (added only when the encoder reads weights, so
    stores that never read any keep their identity); the precision (autocast dtype) changes
    the features themselves.
    """
    model = json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True)
    seeded = cfg.ablation.name != "pretrained"
    identity = {
        "model": cfg.model.name,
        "checkpoint": str(cfg.checkpoint),
        "ablation": cfg.ablation.name,
        "seed": int(cfg.seed) if seeded else None,
        "ablation_scope": cfg.ablation.get("scope", "full") if seeded else None,
        "length_policy": cfg.extract.length_policy,
        "precision": cfg.extract.precision,
        "model_config": hashlib.sha256(model.encode()).hexdigest()[:16],
    }
    weights = weights_key(cfg)
    if weights is not None:
        identity["weights"] = weights
    return identity


def layer_fits(cfg, task: Task, encoder: Encoder, head: str, device: str) -> list[LayerFit]:
    from ptransfer.embed.extract import check_length_policy
    from ptransfer.embed.features import memory_features, store_features
    from ptransfer.heads.fit_layers import fit_layer, make_probe
    from ptransfer.heads.fit_streaming import fit_streaming

    # One check for every path (store, in-memory, streaming): truncation must not misalign
    # per-residue labels.
    check_length_policy(encoder, task.all_sequences(), cfg.extract.length_policy, task.level)
    if head == "streaming":
        return fit_streaming(encoder, task, cfg.head, cfg.extract)
    if encoder.family == "onehot":
        feats = memory_features(encoder, task, cfg.extract)
    else:
        feats = store_features(encoder, task, encoder_identity(cfg), cfg.store_dir, cfg.extract,
                               cfg.get("store"))
    fits = []
    for layer in range(feats.n_layers):
        probe = make_probe(head, cfg.head, task, int(cfg.seed), device)
        fits.append(fit_layer(probe, layer, task, lambda split, _l=layer: feats.get(_l, split)))
        log.info("layer %d/%d: %s", layer, feats.n_layers - 1, _brief(fits[-1], task))
    return fits


def _brief(fit: LayerFit, task: Task) -> str:
    parts = [f"{s} {task.metric}={v[task.metric]:.4f}" for s, v in fit.scores.items()]
    return ", ".join(parts) + f" {fit.hparams}"


def best_layer(fits: list[LayerFit], metric: str) -> int | None:
    """The layer with the best validation ``metric`` under its direction; ties: the lowest.

    A NaN score is never best; when every layer's score is NaN there is no best layer (None)
    and a warning says so.
    """
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    best, best_score = None, None
    for fit in fits:
        score = fit.scores["val"][metric]
        if np.isnan(score):
            continue
        if best is None or sign * (score - best_score) > 0:
            best, best_score = fit.layer, score
    if best is None:
        log.warning("every layer's validation %s is NaN: no best layer", metric)
    return best


def rows_from_fits(cfg, key: CellKey, task, encoder, ref, head, fits,
                   fingerprint: str = "") -> pd.DataFrame:
    best = best_layer(fits, task.metric)
    n_layers = encoder.n_layers
    common = {
        "model": encoder.name, "family": encoder.family, "n_params": encoder.n_params,
        "checkpoint": ref.name, "ablation": cfg.ablation.name,
        **config_fields(cfg, ref.name, ref.step, head),
        "ablation_scope": cfg.ablation.get("scope", "full"),
        "revision": cfg.model.get("revision") or "", "precision": cfg.extract.precision,
        "data_fingerprint": fingerprint[:FINGERPRINT_CHARS],
        "seed": int(cfg.seed), "task": task.name, "dataset": task.dataset, "level": task.level,
        "n_layers": n_layers, "head": head, "cell_id": key.cell_id,
        "config_hash": key.config_hash, "ptransfer_version": __version__,
    }
    rows = []
    for fit in fits:
        for eval_set, values in fit.scores.items():
            for metric, value in values.items():
                rows.append({
                    **common, "layer": fit.layer,
                    "rel_depth": fit.layer / (n_layers - 1) if n_layers > 1 else 1.0,
                    "hparams": json.dumps(fit.hparams, sort_keys=True), "eval_set": eval_set,
                    "metric": metric, "value": value, "n_train": fit.n_train,
                    "n_eval": fit.n_eval[eval_set], "best_layer": fit.layer == best,
                    "n_test_overlap": task.overlap_counts().get(eval_set, 0),
                    "main_metric": metric == task.metric,
                })
    return make_frame(rows)


def run_cell(cfg: DictConfig, lease=None) -> pd.DataFrame:
    """Run one cell and write its files; raises on failure (the grid records it).

    The task is loaded first: its content fingerprint is part of the key. ``lease``: the
    device the sweep gave this job (``grid.devices``); None: ``extract.device`` as given.
    """
    from ptransfer.grid.cell_model import cell_encoder
    from ptransfer.grid.cell_predictions import write_cell_predictions
    from ptransfer.grid.memory import check_memory
    from ptransfer.grid.validate_config import check_before_load
    from ptransfer.heads.fit_layers import resolve_head

    task = load_task(cfg)
    check_declared_shape(cfg, task)
    fingerprint = remember_fingerprint(cfg, task)
    key = cell_key(cfg, fingerprint)
    started = time.time()
    log.info("task %s, data fingerprint %s", task.summary(), fingerprint[:FINGERPRINT_CHARS])
    check_before_load(cfg, task)  # what needs no model weights: nothing on disk yet
    device = lease.torch_device if lease is not None else pick_device(cfg.extract.device)
    device_name = lease.name if lease is not None else device
    write_status(key.dir, **running_status(key.cell_id, started), device=device_name)
    start_heartbeat(key.dir)
    (key.dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    head = resolve_head(cfg.head, task)
    encoder, ref, loaded = cell_encoder(cfg, task, head, device, encoder_identity(cfg),
                                        load_encoder)  # weights only if it runs
    log.info("encoder %s (%d layers x %d), checkpoint %s, ablation %s, seed %s, head %s, "
             "device %s", encoder.name, encoder.n_layers, encoder.dim, ref.name,
             cfg.ablation.name, cfg.seed, head, lease.describe() if lease else device)
    check_memory(task, encoder, head)  # one-hot width and memory; refuses what cannot fit
    fits = layer_fits(cfg, task, encoder, head, device)
    frame = rows_from_fits(cfg, key, task, encoder, ref, head, fits, fingerprint)
    write_rows(frame, key.dir / ROWS_FILE)
    predictions = write_cell_predictions(task, fits, key.dir)
    files = {ROWS_FILE: file_record(key.dir / ROWS_FILE, len(frame)),
             PREDICTIONS_FILE: file_record(predictions, parquet_rows(predictions))}
    note = {} if frame.best_layer.any() else {"note": (
        f"no best layer: every layer's validation {task.metric} is NaN (e.g. constant or "
        f"too few validation targets); no row has best_layer=True")}
    write_status(key.dir, state="done", cell_id=key.cell_id, started=started,
                 seconds=round(time.time() - started, 2), n_rows=len(frame), files=files,
                 device=device_name, model_loaded=loaded, **note)
    return frame
