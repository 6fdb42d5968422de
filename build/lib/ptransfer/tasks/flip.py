"""FLIP-format CSV tasks: GB1, AAV, Meltome, SCL (one per-protein target per sequence).

FLIP ships each dataset as ``splits/<dataset>/splits.zip`` holding ``splits/<split>.csv``
with columns ``sequence,target,set,validation``. Under ``data.root`` the zip lives at
``flip_<dataset>/splits.zip``. Rows become splits as follows:

- ``set == train`` and ``validation`` not true -> ``train``
- ``set == train`` and ``validation`` true (``True``/``true``/``1``) -> ``val``
- ``set == test`` -> ``test`` (its ``validation`` flag is ignored)
- empty ``set`` (e.g. AAV rows outside a split's partitions) -> dropped, count logged.

``window: [start, end]`` keeps residues ``[start, end)`` of every sequence; it must lie
inside each sequence. The GB1 tasks default to ``[0, 56]``: FLIP's GB1 sequences are the
265-residue 5LDE construct, of which residues 1-56 are the GB1 domain (the one the paper
embeds) and hold all four mutated sites V39 D40 G41 V54 (0-based 38, 39, 40, 53).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ptransfer.data import require_file
from ptransfer.tasks.assemble import assemble_task, check_kind
from ptransfer.tasks.base import Task, TaskDataError
from ptransfer.tasks.io import csv_rows, read_zip_member
from ptransfer.tasks.validate import Record, check_sequence, parse_label, parse_number

log = logging.getLogger(__name__)

FLIP_DATASETS = ("gb1", "aav", "meltome", "scl")
FLIP_COLUMNS = ["sequence", "target", "set", "validation"]
GB1_WINDOW = (0, 56)  # the GB1 domain of the 265-residue construct; see the module doc
_TRUE = {"true", "1", "yes"}
_FALSE = {"", "false", "0", "no", "nan"}


def flip_zip_path(dataset: str) -> str:
    """Path of a FLIP dataset's splits.zip relative to data.root."""
    return f"flip_{dataset}/splits.zip"


def load_flip_task(name: str, dataset: str, split: str, kind: str, root: str | Path,
                   window: list[int] | tuple[int, int] | None = None,
                   metric: str | None = None, overlap: str = "keep") -> Task:
    """Load FLIP split ``split`` of ``dataset`` as a per-protein Task.

    Reads ``<root>/flip_<dataset>/splits.zip`` member ``splits/<split>.csv``. Regression
    targets are floats (main metric ``spearman``); classification targets are class names
    encoded as indices into the sorted ``Task.classes`` (main metric ``accuracy``).
    ``Task.dataset`` is ``flip_<dataset>/<split>``.
    """
    if dataset not in FLIP_DATASETS:
        raise TaskDataError(f"task.dataset must be one of {list(FLIP_DATASETS)}, got "
                            f"{dataset!r}")
    check_kind(kind)
    window = _check_window(window)
    path = require_file(root, flip_zip_path(dataset))
    member = f"splits/{split}.csv"
    source = f"{path}:{member}"
    text = read_zip_member(path, member)
    records, n_rows, n_no_set = _read_flip_csv(text, source, kind, window)
    if n_no_set:
        log.info("%s: dropped %d rows with no set", source, n_no_set)
    info = {"source": source, "window": list(window) if window else None, "n_rows": n_rows,
            "n_no_set": n_no_set}
    return assemble_task(name=name, records=records, kind=kind, level="protein",
                         dataset=f"flip_{dataset}/{split}", source=source, metric=metric,
                         info=info, overlap=overlap)


def _check_window(window) -> tuple[int, int] | None:
    if window is None:
        return None
    try:
        start, end = (int(v) for v in window)
    except (TypeError, ValueError):
        raise TaskDataError(f"task.window must be [start, end] or null, got {window!r}") from None
    if not 0 <= start < end:
        raise TaskDataError(f"task.window must satisfy 0 <= start < end, got {window!r}")
    return start, end


def _read_flip_csv(text: str, source: str, kind: str, window: tuple[int, int] | None
                   ) -> tuple[dict[str, list[Record]], int, int]:
    """Records per split, the number of data rows, and the number without a set."""
    records: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    n_rows = n_no_set = 0
    for number, row in csv_rows(text, source, FLIP_COLUMNS):
        n_rows += 1
        where = f"{source} row {number}"
        set_name = row["set"].strip()
        if not set_name:
            n_no_set += 1
            continue
        if set_name not in ("train", "test"):
            raise TaskDataError(f"{where}: column 'set' is {set_name!r}, expected train, test "
                                "or empty")
        sequence = _windowed(row["sequence"].strip(), window, where)
        target = (parse_number(row["target"], where, "target") if kind == "regression"
                  else parse_label(row["target"], where, "target"))
        is_val = _parse_flag(row["validation"], where)
        split = "test" if set_name == "test" else ("val" if is_val else "train")
        records[split].append(Record(sequence, target, where))
    return records, n_rows, n_no_set


def _windowed(sequence: str, window: tuple[int, int] | None, where: str) -> str:
    check_sequence(sequence, where)
    if window is None:
        return sequence
    start, end = window
    if end > len(sequence):
        raise TaskDataError(f"{where}: task.window [{start}, {end}) does not fit a sequence of "
                            f"{len(sequence)} residues")
    return sequence[start:end]


def _parse_flag(text: str, where: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise TaskDataError(f"{where}: column 'validation' is {text!r}, expected True, False or "
                        "empty")
