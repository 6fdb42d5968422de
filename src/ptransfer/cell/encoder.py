"""A cell's encoder: configured, loaded (weights read, ablation applied) only when it runs.

A cell whose embedding store already holds every sequence of its task (phase 2 of a
multirun, or any re-run) only reads: its encoder is configured (name, layers, dimension,
parameter count: what the rows record) but no weights are read and nothing runs on a GPU.
Streaming per-residue cells always run their model (they embed as they fit); one-hot has
no weights at all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra

from ptransfer.cell.spec import CellSpec, EncoderSpec

if TYPE_CHECKING:
    from ptransfer.encoders.base import CheckpointRef, Encoder
    from ptransfer.tasks.base import Task

log = logging.getLogger(__name__)

CPU_HEADS = ("logistic",)  # scikit-learn: a GPU is no use to it


def wants_gpu(spec: CellSpec) -> bool:
    """Whether a cell should hold a GPU: every PLM cell (it may have to run its model) and
    every cell whose probe computes on one (ridge, linear); not one-hot with logistic."""
    if spec.encoder.family != "onehot":
        return True
    return spec.planned_head not in CPU_HEADS


def pick_device(name: str) -> str:
    """The torch device of ``extract.device`` here (``config_values.resolve_device``)."""
    from ptransfer.cell.config_values import resolve_device

    return resolve_device(name)


def build_encoder(encoder: EncoderSpec) -> Encoder:
    """The encoder configured from ``model`` (name, layers, dimension): no weights read."""
    return hydra.utils.instantiate(encoder.config, _convert_="all")


def checkpoint_ref(encoder: EncoderSpec) -> CheckpointRef:
    """``checkpoint=final`` or a key of ``model.checkpoints`` ({path, step}), with its step."""
    from ptransfer.encoders.base import CheckpointRef
    from ptransfer.encoders.weights import resolve_checkpoint

    known, name = encoder.checkpoints, encoder.checkpoint_name
    if name == "final":
        return CheckpointRef("final", (known.get("final") or {}).get("step"))
    return resolve_checkpoint(CheckpointRef(name), known)


def step_only_ref(encoder: EncoderSpec) -> CheckpointRef:
    """The checkpoint's name and step, without resolving (or fetching) its file."""
    from ptransfer.encoders.base import CheckpointRef

    name = encoder.checkpoint_name
    return CheckpointRef(name, (encoder.checkpoints.get(name) or {}).get("step"))


def load_encoder(encoder: EncoderSpec, device: str) -> tuple[Encoder, CheckpointRef]:
    """The encoder with its weights read and its seeded ablation applied, on ``device``."""
    module = build_encoder(encoder)
    ref = checkpoint_ref(encoder)
    module.load(ref, ablation=encoder.ablation, seed=encoder.seed, scope=encoder.scope)
    return module.to(device), ref


def store_is_complete(store_dir: str | Path, identity: dict, encoder: EncoderSpec,
                      extract, task: Task) -> bool:
    """Whether the store of encoder ``identity`` holds every sequence of ``task`` (a
    read-only look)."""
    from ptransfer.embed.store import EmbeddingStore, store_location

    path, identity, dtype = store_location(store_dir, identity, task.level, extract)
    store = EmbeddingStore(path, identity, encoder.n_layers, encoder.dim, level=task.level,
                           dtype=dtype, read_only=True)
    return not store.missing(task.all_sequences())


def cell_encoder(spec: CellSpec, task: Task, head: str, device: str,
                 identity: dict) -> tuple[Encoder, CheckpointRef, bool]:
    """(encoder, checkpoint, whether model weights were loaded) for a cell about to fit.

    The encoder is loaded when the cell will run it: a streaming head, or a store (of
    encoder ``identity``) that lacks some of the task's sequences (it extracts them first).
    """
    encoder = spec.encoder
    if encoder.family == "onehot":
        module, ref = load_encoder(encoder, device)  # a fixed table: nothing to read
        return module, ref, False
    if head != "streaming" and store_is_complete(spec.store_dir, identity, encoder,
                                                 spec.extract, task):
        log.info("store complete: %s is not loaded (features are read from the store)",
                 encoder.name)
        return build_encoder(encoder), step_only_ref(encoder), False
    module, ref = load_encoder(encoder, device)
    log.info("model %s loaded on %s", encoder.name, device)
    return module, ref, True
