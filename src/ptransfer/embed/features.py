"""Per-layer feature matrices of a task's splits, from the embedding store or computed in memory.

The probes see plain arrays: per protein ``N x D``, per residue ``(sum L_i) x D`` with rows in
the order of the split's sequences and residues, aligned with ``Split.flat_targets()``.
PLM features come from the content-addressed HDF5 store (extracted once per encoder
identity); the one-hot baseline is cheap and exact, so it is computed in memory.

Before extracting, ``store_features`` checks that the store's filesystem has room for the
rows still missing (``ptransfer.embed.diskspace``) and refuses at once otherwise. Features
read back are checked finite: rows were finite when written, so NaN/inf is damage, and the
error names the store file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ptransfer.embed.diskspace import check_free_space, expected_store_bytes, needed_for_extraction
from ptransfer.embed.extract import embed_sequences, extract_to_store, row_function
from ptransfer.embed.settings import ExtractSettings
from ptransfer.embed.store import (  # noqa: F401 - store_location: features' API
    DEFAULT_COMMIT_SECONDS,
    EmbeddingStore,
    StoreError,
    store_location,
)
from ptransfer.embed.store_files import short
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
        sequences = self.task.splits[split].sequences
        out = self.store.read_layer(layer, sequences)  # N x D or (sum L) x D
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            path = self.store.path
            raise StoreError(
                f"{path}: layer {layer} of split {split!r} has NaN/inf at feature row {row}"
                f"{_sequence_of(self.task, split, row)}; rows were finite when written, so the "
                f"store file is damaged: delete {path} and re-run to rebuild it")
        return out


def _sequence_of(task: Task, split: str, row: int) -> str:
    """`` (sequence i, 'MKT...')`` of a feature row, for error messages."""
    sequences = task.splits[split].sequences
    if task.level == "residue":
        index = int(np.searchsorted(np.cumsum([len(s) for s in sequences]), row, side="right"))
    else:
        index = row
    return f" (sequence {index}, {short(sequences[index])!r})" if index < len(sequences) else ""


class MemoryFeatures(LayerFeatures):
    """Features held in memory: ``arrays[split]`` is n_layers x rows x D."""

    def __init__(self, task: Task, arrays: dict[str, np.ndarray]) -> None:
        n_layers = next(iter(arrays.values())).shape[0]
        super().__init__(task, n_layers)
        self.arrays = arrays

    def get(self, layer: int, split: str) -> np.ndarray:
        return self.arrays[split][layer]


def memory_features(encoder: Encoder, task: Task, extract: ExtractSettings) -> MemoryFeatures:
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
        toks_per_batch=extract.toks_per_batch,
        length_policy=extract.length_policy,
        precision=extract.precision,
        progress=extract.progress,
    )
    pool = row_function(encoder, task.level, pad_to)
    for indices, tensors in batches:
        for i, feats in zip(indices, tensors):  # feats: n_layers x L x D
            row = pool(feats).numpy()
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


def store_features(
    encoder: Encoder, task: Task, identity: dict, store_dir: str | Path,
    extract: ExtractSettings, commit_seconds: float = DEFAULT_COMMIT_SECONDS,
) -> StoreFeatures:
    """Extract what the store lacks (each unique sequence once), then read from it.

    ``commit_seconds``: a running extraction commits its rows at least this often.
    A complete store is only read: ``encoder`` may then be unloaded (configuration only).
    """
    store = open_store(encoder, task.level, identity, store_dir, extract, commit_seconds)
    sequences = task.all_sequences()
    if store.missing(sequences):
        check_store_space(store, sequences)
        extract_to_store(
            encoder,
            sequences,
            store,
            toks_per_batch=extract.toks_per_batch,
            length_policy=extract.length_policy,
            precision=extract.precision,
            progress=extract.progress,
            sizing=extract.sizing(),
        )
    return StoreFeatures(task, store)


def open_store(encoder: Encoder, level: str, identity: dict, store_dir: str | Path,
               extract: ExtractSettings,
               commit_seconds: float = DEFAULT_COMMIT_SECONDS) -> EmbeddingStore:
    """The store a cell of ``level`` with this encoder identity reads (created if absent)."""
    path, identity, dtype = store_location(store_dir, identity, level, extract)
    return EmbeddingStore(
        path,
        identity=identity,
        n_layers=encoder.n_layers,
        dim=encoder.dim,
        level=level,
        dtype=dtype,
        compression=extract.compression,
        commit_seconds=commit_seconds,
    )


def check_store_space(store: EmbeddingStore, sequences: list[str]) -> None:
    """Refuse, before any forward pass or write, an extraction the disk cannot hold."""
    todo = store.missing(sequences)
    if not todo:
        return
    rows = len(todo) if store.level == "protein" else sum(len(s) for s in todo)
    new = expected_store_bytes(rows, store.n_layers, store.dim, store.dtype)
    # Nothing already on disk is rewritten: new rows are written once, as parts that become
    # their shard's files (small shards' parts are merged: at most 64 MiB copied).
    check_free_space(store.path.parent, needed_for_extraction(new, 0.0),
                     f"the {store.level}-level embedding store {store.path} ({len(todo)} new "
                     f"sequences x {store.n_layers} layers x {store.dim} dims in {store.dtype}, "
                     "written as parts, which become the shards' files)")
