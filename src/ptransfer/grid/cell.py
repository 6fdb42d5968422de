"""One grid cell, end to end: task x encoder (checkpoint, ablation, seed) x head, every layer.

A cell is keyed by the hash of its effective config (what changes its numbers: task, model,
checkpoint, ablation, seed, head, length policy), never by folder names or job numbers. It
writes ``results_dir/cells/<cell_id>/`` with ``config.yaml`` (the resolved config),
``rows.csv`` (long-format rows) and ``status.json`` (done / failed, with the traceback), and
a re-run skips a cell whose status says done and whose rows are there.
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
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ptransfer import __version__
from ptransfer.analysis.rows import ROWS_FILE, make_frame, write_rows
from ptransfer.tasks.base import Task

# torch, the encoders, embed and the heads (sklearn) are imported where a cell runs, not
# here: a re-run of a finished sweep only keys and skips its cells, and importing them
# would be most of its cost (docs/benchmarks.md, tests/test_done_sweep.py).
if TYPE_CHECKING:
    from ptransfer.encoders.base import CheckpointRef, Encoder
    from ptransfer.heads.fit_layers import LayerFit

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
CONFIG_FILE = "config.yaml"
# Keys that do not change a cell's numbers, left out of its hash.
_TASK_KEYS_IGNORED = ("root",)


@dataclass(frozen=True)
class CellKey:
    cell_id: str
    config_hash: str
    dir: Path


def effective_config(cfg: DictConfig) -> dict:
    """The part of the config that determines the cell's rows."""
    task = OmegaConf.to_container(cfg.task, resolve=True)
    for key in _TASK_KEYS_IGNORED:
        task.pop(key, None)
    return {
        "task": task,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "checkpoint": cfg.checkpoint,
        "ablation": cfg.ablation.name,
        "seed": int(cfg.seed),
        "head": OmegaConf.to_container(cfg.head, resolve=True),
        "length_policy": cfg.extract.length_policy,
        "subsample": OmegaConf.to_container(cfg.subsample) if cfg.subsample else None,
    }


def cell_key(cfg: DictConfig) -> CellKey:
    blob = json.dumps(effective_config(cfg), sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    name = "__".join(
        [cfg.task.name, cfg.model.name, str(cfg.checkpoint), cfg.ablation.name, f"s{cfg.seed}"]
    )
    cell_id = f"{name}__{digest[:10]}"
    return CellKey(cell_id, digest[:16], Path(cfg.results_dir) / "cells" / cell_id)


def read_status(cell_dir: Path) -> dict | None:
    path = cell_dir / STATUS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn status file reads as "not done": the cell is redone


def is_done(key: CellKey) -> bool:
    status = read_status(key.dir)
    return bool(status and status.get("state") == "done" and (key.dir / ROWS_FILE).is_file())


def write_status(cell_dir: Path, **status) -> None:
    cell_dir.mkdir(parents=True, exist_ok=True)
    tmp = cell_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str))
    tmp.replace(cell_dir / STATUS_FILE)


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
    encoder.load(ref, ablation=cfg.ablation.name, seed=int(cfg.seed))
    return encoder.to(device), ref


def encoder_identity(cfg: DictConfig) -> dict:
    """What makes two cells' embeddings the same: keys the shared HDF5 store.

    The seed only matters to seeded ablations: pretrained embeddings are shared across seeds.
    The model config hash covers architecture and weights file changes.
    """
    model = json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True)
    seeded = cfg.ablation.name != "pretrained"
    return {
        "model": cfg.model.name,
        "checkpoint": str(cfg.checkpoint),
        "ablation": cfg.ablation.name,
        "seed": int(cfg.seed) if seeded else None,
        "length_policy": cfg.extract.length_policy,
        "model_config": hashlib.sha256(model.encode()).hexdigest()[:16],
    }


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
        feats = store_features(encoder, task, encoder_identity(cfg), cfg.store_dir, cfg.extract)
    fits = []
    for layer in range(feats.n_layers):
        probe = make_probe(head, cfg.head, task, int(cfg.seed), device)
        fits.append(fit_layer(probe, layer, task, lambda split, _l=layer: feats.get(_l, split)))
        log.info("layer %d/%d: %s", layer, feats.n_layers - 1, _brief(fits[-1], task))
    return fits


def _brief(fit: LayerFit, task: Task) -> str:
    parts = [f"{s} {task.metric}={v[task.metric]:.4f}" for s, v in fit.scores.items()]
    return ", ".join(parts) + f" {fit.hparams}"


def rows_from_fits(cfg, key: CellKey, task, encoder, ref, head, fits) -> pd.DataFrame:
    best = max(fits, key=lambda f: f.scores["val"][task.metric]).layer
    n_layers = encoder.n_layers
    common = {
        "model": encoder.name, "family": encoder.family, "n_params": encoder.n_params,
        "checkpoint": ref.name, "checkpoint_step": ref.step, "ablation": cfg.ablation.name,
        "ablation_scope": cfg.ablation.get("scope", "full"),
        "revision": cfg.model.get("revision") or "", "precision": cfg.extract.precision,
        "data_fingerprint": "",
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
                    "main_metric": metric == task.metric,
                })
    return make_frame(rows)


def run_cell(cfg: DictConfig) -> pd.DataFrame:
    """Run one cell and write its files; raises on failure (the grid records it)."""
    from ptransfer.grid.memory import check_memory
    from ptransfer.heads.fit_layers import resolve_head

    key = cell_key(cfg)
    started = time.time()
    write_status(key.dir, state="running", cell_id=key.cell_id, started=started)
    (key.dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    task: Task = hydra.utils.instantiate(cfg.task, _convert_="all")
    if cfg.subsample:
        # A fixed draw, not the cell seed: every arm of a comparison sees the same sequences.
        task = task.subsample(OmegaConf.to_container(cfg.subsample), seed=0)
    log.info("task %s", task.summary())
    device = pick_device(cfg.extract.device)
    encoder, ref = load_encoder(cfg, device)
    head = resolve_head(cfg.head, task, encoder.n_params)
    log.info("encoder %s (%d layers x %d), checkpoint %s, ablation %s, seed %s, head %s",
             encoder.name, encoder.n_layers, encoder.dim, ref.name, cfg.ablation.name,
             cfg.seed, head)
    check_memory(task, encoder, head)  # one-hot width and memory; refuses what cannot fit
    fits = layer_fits(cfg, task, encoder, head, device)
    frame = rows_from_fits(cfg, key, task, encoder, ref, head, fits)
    write_rows(frame, key.dir / ROWS_FILE)
    write_status(key.dir, state="done", cell_id=key.cell_id, started=started,
                 seconds=round(time.time() - started, 2), n_rows=len(frame))
    return frame
