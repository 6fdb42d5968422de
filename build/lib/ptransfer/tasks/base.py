"""The Task contract: what every loader returns and every later stage reads.

A task is a set of named splits (``train``, ``val`` and one or more test sets) of
sequences with targets. Per-protein targets are one value per sequence; per-residue
targets are one integer label per residue with ``IGNORE`` (-1) marking residues that are
excluded from training and scoring (e.g. unresolved in the crystal structure).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ptransfer.tasks.overlap import overlap_mask

log = logging.getLogger(__name__)

IGNORE = -1  # per-residue label of residues excluded from fitting and scoring
FIT_SPLITS = ("train", "val")


class TaskDataError(ValueError):
    """Bad or missing input data. The message names the file, row and problem."""


@dataclass
class Split:
    """One split: ``sequences[i]`` has target ``targets[i]``.

    protein level: ``targets`` is a float (regression) or int (classification) array, N.
    residue level: ``targets`` is a list of N int arrays, ``len(targets[i]) == len(sequences[i])``.
    """

    sequences: list[str]
    targets: np.ndarray | list[np.ndarray]

    def __len__(self) -> int:
        return len(self.sequences)

    def take(self, indices: np.ndarray) -> Split:
        """The sub-split of the given rows, in the given order."""
        targets = self.targets
        picked = targets[indices] if isinstance(targets, np.ndarray) else [targets[i] for i in indices]
        return Split([self.sequences[i] for i in indices], picked)

    def n_residues(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def flat_targets(self) -> np.ndarray:
        """Per-residue targets concatenated over sequences (sum L_i); protein targets as is."""
        if isinstance(self.targets, np.ndarray):
            return self.targets
        if not self.targets:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(self.targets).astype(np.int64)


@dataclass
class Task:
    """A downstream task. ``metric`` is the main metric used for every selection on ``val``."""

    name: str
    level: Literal["protein", "residue"]
    kind: Literal["regression", "classification"]
    splits: dict[str, Split]
    dataset: str
    metric: str
    classes: list[str] | None = None
    info: dict = field(default_factory=dict)
    _overlap: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [s for s in FIT_SPLITS if s not in self.splits]
        if missing:
            raise TaskDataError(f"task {self.name!r}: missing split(s) {missing}")
        if not self.test_sets:
            raise TaskDataError(f"task {self.name!r}: no test set")
        for split_name, split in self.splits.items():
            if len(split) == 0:
                raise TaskDataError(f"task {self.name!r}: split {split_name!r} is empty")

    @property
    def test_sets(self) -> list[str]:
        return [s for s in self.splits if s not in FIT_SPLITS]

    @property
    def n_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def all_sequences(self) -> list[str]:
        """Unique sequences over every split, in first-seen order."""
        return list(dict.fromkeys(s for split in self.splits.values() for s in split.sequences))

    def subsample(self, sizes: dict[str, int], seed: int) -> Task:
        """A copy with at most ``sizes[split]`` sequences per named split, drawn with ``seed``.

        For learning curves and quick looks at big tasks; the drawn rows keep their order.
        """
        unknown = sorted(set(sizes) - set(self.splits))
        if unknown:
            raise TaskDataError(
                f"subsample: task {self.name!r} has no split(s) {unknown}; "
                f"splits are {list(self.splits)}"
            )
        rng = np.random.default_rng(seed)
        splits = {}
        for name, split in self.splits.items():
            n = sizes.get(name)
            if n is None or n >= len(split):
                splits[name] = split
                continue
            splits[name] = split.take(np.sort(rng.choice(len(split), size=int(n), replace=False)))
        info = {**self.info, "subsample": {"sizes": dict(sizes), "seed": seed}}
        return Task(self.name, self.level, self.kind, splits, self.dataset, self.metric,
                    self.classes, info)

    def overlap_counts(self) -> dict[str, int]:
        """Per test set: its sequences that equal, contain or are contained in a train/val one.

        Computed on the splits as they are (after ``task.overlap=drop`` and any subsample),
        once per Task (``tasks.overlap``: set lookups and joined-string searches).
        """
        if self._overlap is None:
            fit = [s for name in FIT_SPLITS for s in self.splits[name].sequences]
            self._overlap = {name: int(overlap_mask(self.splits[name].sequences, fit).sum())
                             for name in self.test_sets}
        return self._overlap
    def fingerprint(self) -> str:
        """SHA-256 hex of the loaded content: every split's name, sequences and targets, in order.

        Also covers level, kind and the class names (they change what a target means). Two
        tasks with equal fingerprints give a probe the same data, whatever files they came
        from; one edited sequence, target or split membership changes it. Targets are hashed
        as little-endian float64 (protein regression) or int64 (class indices, residue labels),
        each length-prefixed so boundaries between items cannot shift unnoticed.
        """
        digest = hashlib.sha256()

        def add(data: bytes) -> None:
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)

        add(f"{self.level}|{self.kind}|{self.classes!r}".encode())
        for name, split in self.splits.items():
            add(name.encode())
            add(len(split).to_bytes(8, "little"))
            for sequence in split.sequences:
                add(sequence.encode())
            if isinstance(split.targets, np.ndarray):
                dtype = "<f8" if self.kind == "regression" else "<i8"
                add(np.ascontiguousarray(split.targets, dtype=dtype).tobytes())
            else:
                for labels in split.targets:
                    add(np.ascontiguousarray(labels, dtype="<i8").tobytes())
        return digest.hexdigest()

    def summary(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        counts = ", ".join(f"{k}={n}" for k, n in self.overlap_counts().items())
        text = (f"{self.name} ({self.level} {self.kind}, {self.dataset}): {sizes}; test "
                f"sequences overlapping train/val (substring either way): {counts}")
        dropped = self.info.get("overlap", {}).get("dropped") or {}
        if dropped:
            removed = ", ".join(f"{k}={n}" for k, n in dropped.items())
            text += f" (task.overlap=drop removed {removed})"
        return text
