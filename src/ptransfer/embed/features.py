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
from ptransfer.encoders.onehot import padded_length
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
    """Embed every unique sequence of ``task`` once, in memory (one-hot baseline, tiny models).

    Each split's n_layers x rows x D float32 array is allocated once and filled as batches
    arrive, so the peak is the features themselves (no per-sequence copies to stack).
    Flattened per-protein rows are padded to ``padded_length`` (the longest sequence, capped
    at ``encoder.max_len``; longer proteins are truncated to it before embedding).
    """
    unique = task.all_sequences()
    flatten = task.level == "protein" and encoder.pooling == "flatten"
    pad_to = padded_length((len(s) for s in unique), encoder.max_len) if flatten else None
    texts = [s[:pad_to] for s in unique] if flatten else unique
    width = pad_to * encoder.dim if flatten else encoder.dim
    arrays, slots = _allocate(task, unique, encoder.n_layers, width)
    batches = embed_sequences(
        encoder,
        texts,
        toks_per_batch=extract_cfg.toks_per_batch,
        length_policy=extract_cfg.length_policy,
        precision=extract_cfg.precision,
        progress=extract_cfg.progress,
    )
    for indices, tensors in batches:
        for i, feats in zip(indices, tensors):  # feats: n_layers x L x D
            row = _pool(encoder, task, feats, pad_to)
            for split, where in slots[i]:
                arrays[split][:, where] = row
    return MemoryFeatures(task, arrays)


def _allocate(task: Task, unique: list[str], n_layers: int, width: int):
    """Zeroed float32 arrays per split (n_layers x rows x width) and, per unique sequence,
    where its rows go: ``slots[i]`` = [(split, row index or residue slice), ...]."""
    index = {s: i for i, s in enumerate(unique)}
    slots: list[list] = [[] for _ in unique]
    arrays = {}
    for name, split in task.splits.items():
        offset = 0
        for j, sequence in enumerate(split.sequences):
            if task.level == "residue":
                slots[index[sequence]].append((name, slice(offset, offset + len(sequence))))
                offset += len(sequence)
            else:
                slots[index[sequence]].append((name, j))
        n_rows = offset if task.level == "residue" else len(split.sequences)
        arrays[name] = np.zeros((n_layers, n_rows, width), dtype=np.float32)
    return arrays, slots


def _pool(encoder: Encoder, task: Task, feats: torch.Tensor, pad_to: int | None) -> np.ndarray:
    if task.level == "residue":
        return feats.numpy()
    if encoder.pooling == "flatten":
        return flatten_pool(feats, pad_to).numpy()
    return mean_pool(feats).numpy()


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
