"""Turn validated records into a :class:`Task`: duplicate and overlap policies, classes, stats."""

from __future__ import annotations

import numpy as np

from ptransfer.tasks.base import FIT_SPLITS, Split, Task, TaskDataError
from ptransfer.tasks.overlap import check_overlap_policy, overlap_mask
from ptransfer.tasks.validate import Record, resolve_duplicates, source_rows

KINDS = ("regression", "classification")
DEFAULT_METRIC = {"regression": "spearman", "classification": "accuracy"}


def check_kind(kind: str, config_key: str = "task.kind") -> str:
    if kind not in KINDS:
        raise TaskDataError(f"{config_key} must be one of {list(KINDS)}, got {kind!r}")
    return kind


def assemble_task(*, name: str, records: dict[str, list[Record]], kind: str, level: str,
                  dataset: str, source: str, metric: str | None = None,
                  classes: list[str] | None = None, info: dict | None = None,
                  overlap: str = "keep") -> Task:
    """Apply the duplicate policy and the overlap policy, and build the Task.

    ``records`` maps split name -> records. Protein classification targets are class
    names, encoded as indices into ``classes`` (default: the sorted names seen anywhere);
    residue targets are already int arrays (L,) and ``classes`` must be given.
    ``info`` gains ``splits``: per split ``n`` and the drop counts (plus residue counts), and
    ``overlap``: the policy and, per test set, how many sequences it removed.
    ``overlap`` (``task.overlap``): ``keep`` leaves test sequences that equal, contain or are
    contained in a train/val sequence in place (counted by ``Task.overlap_counts``; published
    splits stay as published), ``drop`` removes them from the test sets.
    """
    check_kind(kind)
    check_overlap_policy(overlap)
    for split, rows in records.items():
        if not rows:
            raise TaskDataError(f"{source}: no rows for split {split!r}")
    kept, drops = resolve_duplicates(records, source)
    if kind == "classification" and level == "protein" and classes is None:
        classes = sorted({r.target for rows in kept.values() for r in rows})
    splits = {s: _to_split(rows, kind, level, classes) for s, rows in kept.items()}
    info = dict(info or {})
    info["overlap"] = {"policy": overlap, "dropped": {}}
    if overlap == "drop":
        splits, info["overlap"]["dropped"] = _drop_overlaps(splits, f"{source} (task.overlap=drop)")
    info["splits"] = {s: {"n": len(splits[s]), **drops[s], **_residue_stats(splits[s], level)}
                      for s in splits}
    info["source_rows"] = source_rows(kept)  # sequence -> "file row N", for later checks
    return Task(name=name, level=level, kind=kind, splits=splits, dataset=dataset,
                metric=metric or DEFAULT_METRIC[kind], classes=classes, info=info)


def _drop_overlaps(splits: dict[str, Split], where: str) -> tuple[dict[str, Split], dict]:
    """Test sets without the sequences overlapping train/val; removed count per test set."""
    fit = [s for name in FIT_SPLITS for s in splits[name].sequences]
    out, dropped = {}, {}
    for name, split in splits.items():
        if name in FIT_SPLITS:
            out[name] = split
            continue
        leaks = overlap_mask(split.sequences, fit)
        dropped[name] = int(leaks.sum())
        if dropped[name] == len(split):
            raise TaskDataError(f"{where}: every sequence of test set {name!r} overlaps "
                                f"train/val; nothing would be left to test on")
        out[name] = split.take(np.flatnonzero(~leaks))
    return out, dropped


def _to_split(rows: list[Record], kind: str, level: str, classes: list[str] | None) -> Split:
    sequences = [r.sequence for r in rows]
    if level == "residue":
        return Split(sequences, [np.asarray(r.target, dtype=np.int64) for r in rows])
    if kind == "regression":
        return Split(sequences, np.array([r.target for r in rows], dtype=np.float64))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({r.target for r in rows} - set(index))
    if unknown:
        raise TaskDataError(f"labels {unknown} are not among the task's classes {classes}")
    return Split(sequences, np.array([index[r.target] for r in rows], dtype=np.int64))


def _residue_stats(split: Split, level: str) -> dict:
    if level != "residue":
        return {}
    flat = split.flat_targets()
    return {"n_residues": int(flat.size), "n_scored": int((flat >= 0).sum())}
