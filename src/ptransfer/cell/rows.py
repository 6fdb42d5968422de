"""A cell's rows, and what they record about its configuration beyond the numbers: where its
checkpoint sits in pretraining, and the settings that decide whether two cells may be
compared (the probe's own configuration, the length policy, the pooled store dtype).

The analysis never reads configs, only rows, so everything a comparison or an alignment
axis needs must be written here (docs/statistics.md, "Units" and "Alignment").
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ptransfer import __version__
from ptransfer.analysis.rows import make_frame
from ptransfer.cell.key import CellKey
from ptransfer.cell.spec import CellSpec, EncoderSpec
from ptransfer.cell.task_data import FINGERPRINT_CHARS
from ptransfer.heads.spec import HeadSpec
from ptransfer.metrics import HIGHER_IS_BETTER

if TYPE_CHECKING:
    from ptransfer.encoders.base import CheckpointRef, Encoder
    from ptransfer.heads.fit_layers import LayerFit
    from ptransfer.tasks.base import Task

log = logging.getLogger(__name__)

FINAL = "final"


def checkpoint_position(encoder: EncoderSpec, name: str, step) -> dict:
    """``checkpoint_step``, ``checkpoint_fraction`` and ``checkpoint_order`` of checkpoint
    ``name`` of the encoder's ``model.checkpoints``.

    Order: the position in ``model.checkpoints`` as listed (``final`` last when it is not
    listed): the configs list checkpoints in pretraining order, so an axis needs no step.
    Fraction: the entry's ``fraction``, 1 for ``final``, else step / final step when both
    are known, else None.
    """
    known = encoder.checkpoints
    names = [n for n in known if n != FINAL] + [FINAL]
    entry = known.get(name) or {}
    step = step if step is not None else entry.get("step")
    final_step = (known.get(FINAL) or {}).get("step")
    fraction = entry.get("fraction")
    if fraction is None and name == FINAL:
        fraction = 1.0
    elif fraction is None and step is not None and final_step:
        fraction = float(step) / float(final_step)
    return {"checkpoint_step": step, "checkpoint_fraction": fraction,
            "checkpoint_order": names.index(name) if name in names else None}


def head_config_hash(head_spec: HeadSpec, head: str) -> str:
    """SHA-256 prefix of the chosen probe's own configuration (``head.<head>``: estimator
    and its grid, learning rate, ...). ``head=auto`` and ``head=<name>`` give the same hash
    when they pick the same probe with the same parameters."""
    blob = json.dumps(head_spec.probe_config(head), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def config_fields(spec: CellSpec, name: str, step, head: str) -> dict:
    """The rows' configuration columns of a cell (see module docstring)."""
    return {**checkpoint_position(spec.encoder, name, step),
            "length_policy": spec.extract.length_policy,
            "pooled_dtype": spec.extract.pooled_dtype,
            "head_config": head_config_hash(spec.head, head)}


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


def rows_from_fits(spec: CellSpec, key: CellKey, task: Task, encoder: Encoder,
                   ref: CheckpointRef, head: str, fits: list[LayerFit],
                   fingerprint: str = "", best: int | None = None) -> pd.DataFrame:
    """The cell's long-format rows: one per layer x eval set x metric (``analysis.rows``);
    ``best``: the layer chosen elsewhere (cross-validation), else the best on validation."""
    best = best if best is not None else best_layer(fits, task.metric)
    n_layers = encoder.n_layers
    common = {
        "model": encoder.name, "family": encoder.family, "n_params": encoder.n_params,
        "checkpoint": ref.name, "ablation": spec.encoder.ablation,
        **config_fields(spec, ref.name, ref.step, head),
        "ablation_scope": spec.encoder.scope,
        "revision": spec.encoder.config.get("revision") or "",
        "precision": spec.encoder.precision,
        "data_fingerprint": fingerprint[:FINGERPRINT_CHARS],
        "seed": spec.seed, "task": task.name, "dataset": task.dataset, "level": task.level,
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
