"""Input checks shared by every task loader, and the duplicate policy.

Each check raises :class:`TaskDataError` naming the file, the row (1-based data row, the
header not counted, or the FASTA record id) and the problem; loaders pass that location as
``where``. The checks:

- sequences: non-empty, upper case, letters of :data:`ALPHABET` only (the 20 canonical
  amino acids plus B Z X U O J, which the ESM and CARP alphabets accept);
- targets: numeric and finite (regression), non-empty (classification), and per-residue
  labels exactly as long as their sequence;
- columns: every required column present;
- the same sequence with different targets, within a split or across splits.

Duplicate policy (:func:`resolve_duplicates`; the counts are logged and returned):

- an exact duplicate (same sequence, same target) in the same split is dropped;
- a train or val sequence that is also in a test set is dropped from train / val, so no
  test sequence is ever fitted on; a val sequence also in train is dropped from val;
- the same sequence in two test sets stays in both (each set is scored on its own);
- per-residue targets "agree" when they match at every residue both score (neither is
  ``IGNORE``). Agreeing entries with different masks in one split are both kept (CB513
  lists several domains of one chain this way, each scoring its own residues).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ptransfer.tasks.base import FIT_SPLITS, IGNORE, TaskDataError

log = logging.getLogger(__name__)

CANONICAL = "ACDEFGHIKLMNPQRSTVWY"
AMBIGUOUS = "BZXUOJ"  # Asx, Glx, any, selenocysteine, pyrrolysine, Leu/Ile
ALPHABET = frozenset(CANONICAL + AMBIGUOUS)
MIN_SPLIT_SIZE = 2  # sequences with a label, per split (see check_split_sizes)


@dataclass
class Record:
    """One example as read: ``target`` is a float, a class name, or L int labels."""

    sequence: str
    target: float | str | np.ndarray
    where: str  # "<file> row 12" or "<file> record 1abc-A", for messages


def check_sequence(sequence: str, where: str) -> None:
    """Raise unless ``sequence`` is a non-empty upper-case string over ALPHABET."""
    if not sequence:
        raise TaskDataError(f"{where}: empty sequence")
    bad = set(sequence) - ALPHABET
    if not bad:
        return
    position = min(sequence.index(c) for c in bad)
    letter = sequence[position]
    if letter.isalpha() and letter.upper() in ALPHABET:
        raise TaskDataError(
            f"{where}: lowercase residue {letter!r} at position {position + 1}; "
            "sequences must be upper case")
    raise TaskDataError(
        f"{where}: unknown residue {letter!r} at position {position + 1}; accepted: "
        f"{CANONICAL} and {AMBIGUOUS}")


def parse_number(text: str, where: str, column: str) -> float:
    """A finite float from a CSV cell, or an error naming the cell."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise TaskDataError(f"{where}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise TaskDataError(f"{where}: column {column!r} is {text!r}, not a finite number")
    return value


def parse_label(text: str, where: str, column: str) -> str:
    """A non-empty class name from a CSV cell."""
    label = (text or "").strip()
    if not label:
        raise TaskDataError(f"{where}: column {column!r} is empty (missing class label)")
    return label


def check_label_length(sequence: str, labels: str | np.ndarray, where: str,
                       what: str = "labels") -> None:
    if len(labels) != len(sequence):
        raise TaskDataError(f"{where}: {len(labels)} {what} for a sequence of "
                            f"{len(sequence)} residues")


def require_columns(found: list[str] | None, required: list[str], source: str) -> None:
    found = list(found or [])
    missing = [c for c in required if c not in found]
    if missing:
        raise TaskDataError(f"{source}: missing column(s) {missing}; found {found}")


def _first_conflict(a: Record, b: Record) -> str | None:
    """How ``a`` and ``b`` (same sequence) disagree, or None when their targets agree."""
    if isinstance(a.target, np.ndarray):
        both_scored = (a.target != IGNORE) & (b.target != IGNORE)
        differ = np.flatnonzero(both_scored & (a.target != b.target))
        if differ.size == 0:
            return None
        i = int(differ[0])
        return f"residue {i + 1} labelled {a.target[i]} vs {b.target[i]}"
    if a.target == b.target:
        return None
    return f"target {a.target!r} vs {b.target!r}"


def _same_target(a: Record, b: Record) -> bool:
    if isinstance(a.target, np.ndarray):
        return bool(np.array_equal(a.target, b.target))
    return a.target == b.target


def _drop_reason(split: str, earlier_split: str, exact: bool) -> str | None:
    """Why a record is dropped given an earlier-kept copy in ``earlier_split`` (or None)."""
    if split == earlier_split:
        return "duplicates" if exact else None
    if split in FIT_SPLITS and earlier_split not in FIT_SPLITS:
        return "test_overlap"
    if split == "val" and earlier_split == "train":
        return "train_overlap"
    return None


def resolve_duplicates(records: dict[str, list[Record]], source: str
                       ) -> tuple[dict[str, list[Record]], dict[str, dict[str, int]]]:
    """Apply the module's duplicate policy to ``records`` (split name -> records).

    Returns the kept records per split (input order) and per-split drop counts
    ``{split: {"duplicates": n, "test_overlap": n, "train_overlap": n}}``.
    Raises TaskDataError when one sequence carries two disagreeing targets anywhere.
    """
    test_sets = [s for s in records if s not in FIT_SPLITS]
    order = test_sets + [s for s in ("train", "val") if s in records]
    seen: dict[str, list[tuple[str, Record]]] = {}
    kept: dict[str, list[Record]] = {}
    stats: dict[str, dict[str, int]] = {}
    for split in order:
        counts = {"duplicates": 0, "test_overlap": 0, "train_overlap": 0}
        kept[split] = []
        for record in records[split]:
            reason = None
            for earlier_split, earlier in seen.get(record.sequence, ()):
                conflict = _first_conflict(earlier, record)
                if conflict is not None:
                    raise TaskDataError(
                        f"{source}: {record.where} ({split}) repeats the sequence of "
                        f"{earlier.where} ({earlier_split}) with a different target: {conflict}")
                reason = reason or _drop_reason(split, earlier_split,
                                                _same_target(earlier, record))
            seen.setdefault(record.sequence, []).append((split, record))
            if reason:
                counts[reason] += 1
            else:
                kept[split].append(record)
        stats[split] = counts
        _log_drops(source, split, counts)
    # fit splits first, then test sets in their given order: the order Task.splits keeps
    out_order = [s for s in FIT_SPLITS if s in records] + test_sets
    return {s: kept[s] for s in out_order}, {s: stats[s] for s in out_order}


def _log_drops(source: str, split: str, counts: dict[str, int]) -> None:
    words = {"duplicates": "exact duplicates", "test_overlap": "sequences also in a test set",
             "train_overlap": "sequences also in train"}
    for key, n in counts.items():
        if n:
            log.info("%s: dropped %d %s from %s", source, n, words[key], split)


def source_rows(records: dict[str, list[Record]]) -> dict[str, str]:
    """Sequence -> where it was first read (``"file.csv row 6"``): checks made after
    loading (a model's alphabet) name the same file and row as the loaders' checks."""
    rows: dict[str, str] = {}
    for split_records in records.values():
        for record in split_records:
            rows.setdefault(record.sequence, record.where)
    return rows


def check_classes(task) -> None:
    """What a probe needs of a task's labels (a cell checks this before loading a model).

    A classification task needs two classes in train: :class:`TaskDataError` naming the
    task's source otherwise (no probe can be fitted). A class present only in val or test sets
    is logged as a warning: the probe can never predict it, so those items are always scored
    wrong. Then every split needs :data:`MIN_SPLIT_SIZE` labelled sequences
    (:func:`check_split_sizes`).
    """
    if task.kind == "classification":
        _check_train_classes(task)
    check_split_sizes(task)


def check_split_sizes(task) -> None:
    """Raise :class:`TaskDataError` naming the first split with fewer than
    :data:`MIN_SPLIT_SIZE` sequences that carry a label, and its size.

    A 1-row test set scored NaN for every correlation (the column silently vanished) and a
    1-row train set standardised every feature to a constant and fitted nothing.
    """
    source = task.info.get("source", task.dataset)
    for name, split in task.splits.items():
        if task.level == "residue":
            n = sum(bool((np.asarray(t) != IGNORE).any()) for t in split.targets)
        else:
            n = len(split)
        if n < MIN_SPLIT_SIZE:
            labelled = " with a label" if task.level == "residue" else ""
            raise TaskDataError(
                f"{source}: split {name!r} of task {task.name!r} has {n} sequence(s){labelled}; "
                f"every split needs at least {MIN_SPLIT_SIZE} to be fitted and scored "
                "(correlations and intervals over proteins are undefined on one)")


def _check_train_classes(task) -> None:
    source = task.info.get("source", task.dataset)
    classes = list(task.classes or [])

    def seen(split: str) -> set[int]:
        flat = task.splits[split].flat_targets()
        return {int(c) for c in np.unique(flat[flat != IGNORE])}

    def names(indices) -> list[str]:
        return [str(classes[i]) if i < len(classes) else str(i) for i in sorted(indices)]

    in_train = seen("train")
    if len(in_train) < 2:
        raise TaskDataError(
            f"{source}: task {task.name!r} is a classification task but its train split has "
            f"{len(in_train)} class(es) {names(in_train)}; a classifier needs at least 2 "
            "(is task.kind right? is task.target_col the label column?)")
    for split in task.splits:
        unseen = seen(split) - in_train
        if split != "train" and unseen:
            log.warning("%s: class(es) %s appear in %s but never in train: the probe can "
                        "never predict them", source, names(unseen), split)
