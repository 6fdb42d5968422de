"""Per-layer feature matrices of a task's splits, from the embedding store or computed in memory.

The probes see plain arrays: per protein ``N x D``, per residue ``(sum L_i) x D`` with rows in
the order of the split's sequences and residues, aligned with ``Split.flat_targets()``.
PLM features come from the content-addressed HDF5 store (extracted once per encoder
identity); the one-hot baseline is cheap and exact, so it is computed in memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ptransfer.embed.extract import embed_sequences, extract_to_store, flatten_pool, mean_pool
from ptransfer.embed.store import EmbeddingStore, store_path
from ptransfer.encoders.base import Encoder
from ptransfer.tasks.base import Task

log = logging.getLogger(__name__)


class LayerFeatures:
    """``get(layer, split)`` -> feature matrix of that split at that layer."""

    def __init__(self, task: Task, n_layers: int) -> None:
        self.task = task
        self.n_layers = n_layers

    def get(self, layer: int, split: str) -> np.ndarray:
        raise NotImplementedError


class StoreFeatures(LayerFeatures):
    """Features read layer by layer from an EmbeddingStore (memory: one layer of one split)."""

    def __init__(self, task: Task, store: EmbeddingStore) -> None:
        super().__init__(task, store.n_layers)
        self.store = store

    def get(self, layer: int, split: str) -> np.ndarray:
        return self.store.read_layer(layer, self.task.splits[split].sequences)


class MemoryFeatures(LayerFeatures):
    """Features held in memory: ``arrays[split]`` is n_layers x rows x D."""

    def __init__(self, task: Task, arrays: dict[str, np.ndarray]) -> None:
        n_layers = next(iter(arrays.values())).shape[0]
        super().__init__(task, n_layers)
        self.arrays = arrays

    def get(self, layer: int, split: str) -> np.ndarray:
        return self.arrays[split][layer]


def memory_features(encoder: Encoder, task: Task, extract_cfg) -> MemoryFeatures:
    """Embed every unique sequence of ``task`` once, in memory (one-hot baseline, tiny models)."""
    unique = task.all_sequences()
    per_seq: dict[str, torch.Tensor] = {}
    batches = embed_sequences(
        encoder,
        unique,
        toks_per_batch=extract_cfg.toks_per_batch,
        length_policy=extract_cfg.length_policy,
        precision=extract_cfg.precision,
        progress=extract_cfg.progress,
    )
    pad_to = max(len(s) for s in unique)
    for indices, tensors in batches:
        for i, feats in zip(indices, tensors):  # feats: n_layers x L x D
            per_seq[unique[i]] = _pool(encoder, task, feats, pad_to)
    arrays = {
        name: _stack(task, [per_seq[s] for s in split.sequences])
        for name, split in task.splits.items()
    }
    return MemoryFeatures(task, arrays)


def _pool(encoder: Encoder, task: Task, feats: torch.Tensor, pad_to: int) -> np.ndarray:
    if task.level == "residue":
        return feats.numpy()
    if encoder.pooling == "flatten":
        return flatten_pool(feats, pad_to).numpy()
    return mean_pool(feats).numpy()


def _stack(task: Task, per_seq: list[np.ndarray]) -> np.ndarray:
    """protein: n_layers x N x D; residue: n_layers x (sum L) x D."""
    if task.level == "residue":
        return np.concatenate(per_seq, axis=1)
    return np.stack(per_seq, axis=1)


def store_features(
    encoder: Encoder, task: Task, identity: dict, store_dir: str | Path, extract_cfg
) -> StoreFeatures:
    """Extract what the store lacks (each unique sequence once), then read from it."""
    level = task.level
    dtype = extract_cfg.residue_dtype if level == "residue" else "float32"
    path = store_path(store_dir, identity, level)
    store = EmbeddingStore(
        path,
        identity=identity,
        n_layers=encoder.n_layers,
        dim=encoder.dim,
        level=level,
        dtype=dtype,
        compression=extract_cfg.compression,
    )
    extract_to_store(
        encoder,
        task.all_sequences(),
        store,
        toks_per_batch=extract_cfg.toks_per_batch,
        length_policy=extract_cfg.length_policy,
        precision=extract_cfg.precision,
        progress=extract_cfg.progress,
    )
    return StoreFeatures(task, store)
