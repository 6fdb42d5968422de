"""A cell's key and its encoder's identity: what changes its numbers, hashed.

A cell is keyed by the hash of its effective config (what changes its numbers: task config
and the fingerprint of the task's loaded content, model and the fingerprint of the weights
it reads, checkpoint, ablation, seed, head, length policy, precision), never by folder
names or job numbers. Its folder is ``results_dir/cells/<cell_id>/``, and a re-run skips a
cell whose status says done and whose rows and predictions match that record
(``analysis.cell_files``).

The encoder identity keys the shared embedding store: what makes two cells' embeddings the
same (every cell of one encoder on any task reads one store).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ptransfer.analysis.cell_files import file_problem
from ptransfer.analysis.predictions import PREDICTIONS_FILE
from ptransfer.analysis.rows import ROWS_FILE
from ptransfer.cell.spec import CellSpec, EncoderSpec
from ptransfer.cell.status import read_status
from ptransfer.cell.task_data import task_fingerprint

CONFIG_FILE = "config.yaml"
UNAVAILABLE = "unavailable: "  # the data fingerprint of a task that cannot be loaded
RESULT_FILES = (ROWS_FILE, PREDICTIONS_FILE)  # recorded (rows, bytes, SHA-256) in status.json
# Keys that do not change a cell's numbers, left out of its hash.
_TASK_KEYS_IGNORED = ("root",)


CV_SUFFIX = "__cv"  # the cross-validated selection of a cell, written beside it


@dataclass(frozen=True)
class CellKey:
    cell_id: str
    config_hash: str
    dir: Path

    def cross_validated(self) -> CellKey:
        """The key of this cell's cross-validated selection (``selection``): a sibling
        folder with its own rows, predictions and status, collected like any cell."""
        return CellKey(self.cell_id + CV_SUFFIX, self.config_hash,
                       self.dir.with_name(self.dir.name + CV_SUFFIX))


def data_fingerprint(spec: CellSpec) -> str:
    """The task's content fingerprint (memoised, see cell/task_data.py).

    A task that cannot be loaded (data missing) gets a placeholder: its cell is then never
    done, and running it fails with the loader's own error, recorded under this key.
    """
    try:
        return task_fingerprint(spec.task, spec.results_dir)
    except Exception as err:  # noqa: BLE001 - any loader error (logged once): the run reports it
        return f"{UNAVAILABLE}{type(err).__name__}"


def effective_config(spec: CellSpec, fingerprint: str | None = None) -> dict:
    """The part of the config that determines the cell's rows (``fingerprint``: the task's
    content fingerprint, looked up when not given)."""
    task = {k: v for k, v in spec.task.config.items() if k not in _TASK_KEYS_IGNORED}
    encoder = spec.encoder
    effective = {
        "task": task,
        "model": encoder.config,
        "checkpoint": encoder.checkpoint,
        "ablation": encoder.ablation,
        "ablation_scope": encoder.scope,
        "seed": spec.seed,
        "head": spec.head.config,
        "length_policy": encoder.length_policy,
        "subsample": spec.task.subsample,
        "precision": encoder.precision,
        "data": fingerprint if fingerprint is not None else data_fingerprint(spec),
        "weights": encoder.weights,
    }
    if spec.extract.pooled_dtype != "float32":  # float16 storage changes the numbers; the
        effective["pooled_dtype"] = spec.extract.pooled_dtype  # default keeps old keys
    if spec.selection.method != "val":  # cv / auto add the cross-validated cell beside it
        effective["selection"] = dataclasses.asdict(spec.selection)  # (val keeps old keys)
    return effective


def cell_key(spec: CellSpec, fingerprint: str | None = None) -> CellKey:
    blob = json.dumps(effective_config(spec, fingerprint), sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    cell_id = f"{spec.name}__{digest[:10]}"
    return CellKey(cell_id, digest[:16], spec.results_dir / "cells" / cell_id)


def is_done(key: CellKey) -> bool:
    """Status done, and rows and predictions exactly as that status recorded them."""
    return file_problem(key.dir, read_status(key.dir), RESULT_FILES) is None


def encoder_identity(encoder: EncoderSpec) -> dict:
    """What makes two cells' embeddings the same: keys the shared HDF5 store.

    The seed and the ablation scope only matter to seeded ablations: pretrained embeddings
    are shared across seeds and scopes. The model config hash covers the architecture and the
    weights' path, ``weights`` their content (added only when the encoder reads weights, so
    stores that never read any keep their identity); the precision (autocast dtype) changes
    the features themselves.
    """
    model = json.dumps(encoder.config, sort_keys=True)
    identity = {
        "model": encoder.name,
        "checkpoint": encoder.checkpoint_name,
        "ablation": encoder.ablation,
        "seed": encoder.seed if encoder.seeded else None,
        "ablation_scope": encoder.scope if encoder.seeded else None,
        "length_policy": encoder.length_policy,
        "precision": encoder.precision,
        "model_config": hashlib.sha256(model.encode()).hexdigest()[:16],
    }
    if encoder.weights is not None:
        identity["weights"] = encoder.weights
    return identity
