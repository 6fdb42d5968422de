"""Whether a cell loads its model, and which cells want a GPU.

A cell whose embedding store already holds every sequence of its task (phase 2 of a
multirun, or any re-run) only reads: its encoder is configured (name, layers, dimension,
parameter count: what the rows record) but no weights are read and nothing runs on a GPU.
Streaming per-residue cells always run their model (they embed as they fit); one-hot has
no weights at all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from ptransfer.grid.task_data import planned_head

if TYPE_CHECKING:
    from ptransfer.encoders.base import CheckpointRef, Encoder
    from ptransfer.tasks.base import Task

log = logging.getLogger(__name__)

CPU_HEADS = ("logistic",)  # scikit-learn: a GPU is no use to it


def wants_gpu(cfg: DictConfig) -> bool:
    """Whether a cell should hold a GPU: every PLM cell (it may have to run its model) and
    every cell whose probe computes on one (ridge, linear); not one-hot with logistic."""
    if cfg.model.get("family", "onehot") != "onehot":
        return True
    return planned_head(cfg) not in CPU_HEADS


def store_is_complete(cfg: DictConfig, task: Task, identity: dict) -> bool:
    """Whether the cell's store (of encoder ``identity``) holds every sequence of its task
    (a read-only look)."""
    from ptransfer.embed.store import EmbeddingStore, store_location

    path, identity, dtype = store_location(cfg.store_dir, identity, task.level, cfg.extract)
    store = EmbeddingStore(path, identity, int(cfg.model.n_blocks) + 1, int(cfg.model.dim),
                           level=task.level, dtype=dtype, read_only=True)
    return not store.missing(task.all_sequences())


def step_only_ref(cfg: DictConfig) -> CheckpointRef:
    """The checkpoint's name and step, without resolving (or fetching) its file."""
    from ptransfer.encoders.base import CheckpointRef

    node = cfg.model.get("checkpoints")
    known = OmegaConf.to_container(node, resolve=True) if node else {}
    name = str(cfg.checkpoint)
    return CheckpointRef(name, (known.get(name) or {}).get("step"))


def cell_encoder(cfg: DictConfig, task: Task, head: str, device: str, identity: dict,
                 load_encoder) -> tuple[Encoder, CheckpointRef, bool]:
    """(encoder, checkpoint, whether model weights were loaded) for a cell about to fit.

    The encoder is loaded (``load_encoder(cfg, device)``, the cell's) when the cell will run
    it: a streaming head, or a store (of encoder ``identity``) that lacks some of the task's
    sequences (it extracts them first).
    """
    family = cfg.model.get("family", "onehot")
    if family == "onehot":
        encoder, ref = load_encoder(cfg, device)  # a fixed table: nothing to read
        return encoder, ref, False
    if head != "streaming" and store_is_complete(cfg, task, identity):
        log.info("store complete: %s is not loaded (features are read from the store)",
                 cfg.model.name)
        return hydra.utils.instantiate(cfg.model, _convert_="all"), step_only_ref(cfg), False
    encoder, ref = load_encoder(cfg, device)
    log.info("model %s loaded on %s", cfg.model.name, device)
    return encoder, ref, True
