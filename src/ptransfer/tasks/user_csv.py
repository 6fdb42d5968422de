"""A user's own per-protein task from one CSV file (``task=csv task.path=my.csv``).

The CSV needs a sequence column, a target column and a split column whose values are
``train``, ``val`` or ``test`` (case-insensitive); any other value names an extra test set
(``holdout`` rows become test set ``holdout``). Rows with an empty split value are dropped
and counted. Column names are configurable; every check of ``ptransfer.tasks.validate``
applies, with errors naming the file and the 1-based data row.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ptransfer.tasks.assemble import assemble_task, check_kind
from ptransfer.tasks.base import Task, TaskDataError
from ptransfer.tasks.io import csv_rows, read_text_file
from ptransfer.tasks.validate import Record, check_sequence, parse_label, parse_number

log = logging.getLogger(__name__)

_STANDARD_SPLITS = ("train", "val", "test")


def file_stem(path) -> str:
    """``my_task`` for ``data/my_task.csv``: the default ``task.name`` of ``task=csv``
    (``conf/task/csv.yaml`` resolves it through ``cell.spec``'s resolver)."""
    return Path(str(path)).stem


def load_csv_task(path: str | Path, name: str | None = None, sequence_col: str = "sequence",
                  target_col: str = "target", split_col: str = "set",
                  kind: str = "regression", metric: str | None = None,
                  overlap: str = "keep") -> Task:
    """Load ``path`` as a per-protein task (targets float, or class names -> sorted classes).

    Needs at least one ``train`` row, one ``val`` row and one test row (``test`` or any
    extra split name). ``Task.dataset`` is ``csv/<file name>``; ``name`` defaults to the
    file's stem (what conf/task/csv.yaml resolves it to).
    """
    check_kind(kind)
    path = Path(path)
    if not path.is_file():
        raise TaskDataError(f"task.path: no CSV file at {path.resolve()}")
    source = str(path)
    columns = [sequence_col, target_col, split_col]
    records: dict[str, list[Record]] = {"train": [], "val": []}
    n_rows = n_no_split = 0
    for number, row in csv_rows(read_text_file(path), source, columns):
        n_rows += 1
        where = f"{source} row {number}"
        split = _split_name(row[split_col])
        if not split:
            n_no_split += 1
            continue
        sequence = row[sequence_col].strip()
        check_sequence(sequence, where)
        target = (parse_number(row[target_col], where, target_col) if kind == "regression"
                  else parse_label(row[target_col], where, target_col))
        records.setdefault(split, []).append(Record(sequence, target, where))
    if n_no_split:
        log.info("%s: dropped %d rows with an empty %r", source, n_no_split, split_col)
    _require_splits(records, source, split_col)
    return assemble_task(name=name or file_stem(path), records=records, kind=kind, level="protein",
                         dataset=f"csv/{path.name}", source=source, metric=metric,
                         info={"source": source, "n_rows": n_rows, "n_no_split": n_no_split},
                         overlap=overlap)


def _split_name(value: str) -> str:
    value = value.strip()
    return value.lower() if value.lower() in _STANDARD_SPLITS else value


def _require_splits(records: dict[str, list[Record]], source: str, split_col: str) -> None:
    missing = [s for s in ("train", "val") if not records[s]]
    if len(records) == 2:
        missing.append("test (or any other split name)")
    if missing:
        raise TaskDataError(f"{source}: no rows with {split_col!r} = {', '.join(missing)}; "
                            "a task needs train, val and at least one test set")
