"""3-state secondary structure (H, E, C per residue): FLIP train/val, NetSurfP test sets.

Train and val come from FLIP's ``flip_secondary_structure/splits.zip`` (NetSurfP-2.0's
training proteins): ``splits/sequences.fasta`` (residues), ``splits/sampled.fasta``
(labels; header ``>id SET=train|test VALIDATION=True|False``) and ``splits/mask.fasta``
(1 = resolved in the structure). ``SET=train`` goes to ``train`` or, with
``VALIDATION=True``, to ``val``; ``SET=test`` is FLIP's own NEW364 test set, available as
test set ``new364`` (off by default).

Test sets ``cb513``, ``ts115`` and ``casp12`` are NetSurfP-2.0's CSVs as redistributed by
ProtTrans (``netsurfp_ss_test/<NAME>_HHblits.csv``, header
``input, dssp3, dssp8, disorder, cb513_mask``, space-separated per-residue fields).

Which residues are scored (all others get label IGNORE):

- FLIP: mask == 1. Unresolved residues (mask 0) always carry the placeholder label C.
- NetSurfP CSVs: disorder == 1 and cb513_mask == 1. ``disorder`` 0 marks residues missing
  from the structure (their dssp3 is always the placeholder C). ``cb513_mask`` 0 marks
  residues of the full PDB chain outside the CB513 entry: CB513 rows hold whole chains,
  and 79 rows repeat a chain of another row with a disjoint mask (one row per CB513
  domain), so the 511 rows score 83,991 - 564 = 83,427 residues. TS115 and CASP12 masks
  are all 1.

Any train / val protein identical to a protein of a selected test set is dropped (counted in
``Task.info['splits'][split]['test_overlap']``): 2 CB513 and 1 TS115 chain are in FLIP's
training data, with labels that differ at a few residues.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ptransfer.data import require_file
from ptransfer.tasks.assemble import assemble_task
from ptransfer.tasks.base import IGNORE, Task, TaskDataError
from ptransfer.tasks.io import FastaRecord, csv_rows, parse_fasta, read_text_file, read_zip_member
from ptransfer.tasks.validate import Record, check_label_length, check_sequence

log = logging.getLogger(__name__)

SS3_CLASSES = ["H", "E", "C"]
FLIP_SS_ZIP = "flip_secondary_structure/splits.zip"
NETSURFP_FILES = {
    "cb513": "netsurfp_ss_test/CB513_HHblits.csv",
    "ts115": "netsurfp_ss_test/TS115_HHblits.csv",
    "casp12": "netsurfp_ss_test/CASP12_HHblits.csv",
}
NEW364 = "new364"
DEFAULT_TEST_SETS = ("cb513", "ts115", "casp12")
NETSURFP_COLUMNS = ["input", "dssp3", "disorder", "cb513_mask"]

_LABEL_CODE = np.full(256, -2, dtype=np.int64)  # byte -> class index, -2 = not a label
for _i, _c in enumerate(SS3_CLASSES):
    _LABEL_CODE[ord(_c)] = _i


def load_ss3_task(root: str | Path, name: str = "ss3",
                  test_sets: list[str] | tuple[str, ...] = DEFAULT_TEST_SETS,
                  overlap: str = "keep") -> Task:
    """The residue-level SS3 task: classes H, E, C as 0, 1, 2 and IGNORE (-1) unscored.

    ``test_sets``: any of ``cb513``, ``ts115``, ``casp12`` (NetSurfP CSVs) and ``new364``
    (FLIP's SET=test entries). ``Task.info['splits']`` holds per split the protein count,
    residues, scored residues and drop counts.
    """
    test_sets = _check_test_sets(test_sets)
    flip = _read_flip_ss(require_file(root, FLIP_SS_ZIP))
    records: dict[str, list[Record]] = {}
    for test_set in test_sets:
        if test_set == NEW364:
            records[test_set] = flip["test"]
        else:
            path = require_file(root, NETSURFP_FILES[test_set])
            records[test_set] = read_netsurfp_csv(read_text_file(path), str(path))
    # FLIP and NetSurfP label a few shared chains differently, so overlapping fit proteins
    # are dropped by identity here, before the generic check would call them conflicts.
    test_sequences = {r.sequence for s in test_sets for r in records[s]}
    identical = {}
    for split in ("train", "val"):
        records[split] = [r for r in flip[split] if r.sequence not in test_sequences]
        identical[split] = len(flip[split]) - len(records[split])
        if identical[split]:
            log.info("ss3: dropped %d %s proteins identical to a test-set protein",
                     identical[split], split)
    task = assemble_task(name=name, records=records, kind="classification", level="residue",
                         dataset="flip_secondary_structure/sampled", source=str(root),
                         classes=list(SS3_CLASSES),
                         info={"test_sets": list(test_sets)}, overlap=overlap)
    for split, n in identical.items():
        task.info["splits"][split]["test_overlap"] += n
    return task


def _check_test_sets(test_sets) -> list[str]:
    if isinstance(test_sets, str):
        test_sets = [test_sets]
    chosen = list(dict.fromkeys(test_sets or []))
    known = [*NETSURFP_FILES, NEW364]
    unknown = [t for t in chosen if t not in known]
    if unknown or not chosen:
        raise TaskDataError(f"task.test_sets must be a non-empty list of {known}, got "
                            f"{list(test_sets or [])}")
    return chosen


def encode_labels(labels: str, where: str) -> np.ndarray:
    """'HEC...' -> int64 array (L,) of 0/1/2; any other letter is an error naming it."""
    codes = _LABEL_CODE[np.frombuffer(labels.encode("latin-1", "replace"), dtype=np.uint8)]
    bad = np.flatnonzero(codes < 0)
    if bad.size:
        i = int(bad[0])
        raise TaskDataError(f"{where}: label {labels[i]!r} at residue {i + 1} is not one of "
                            f"{SS3_CLASSES}")
    return codes


_FLIP_SPLIT = {("train", "false"): "train", ("train", "true"): "val", ("test", "false"): "test"}


def _read_flip_ss(path: Path) -> dict[str, list[Record]]:
    """FLIP's three FASTA files -> records for train, val and test (NEW364)."""
    fasta = {kind: parse_fasta(read_zip_member(path, f"splits/{kind}.fasta"),
                               f"{path}:splits/{kind}.fasta")
             for kind in ("sequences", "sampled", "mask")}
    records: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for record_id, entry in fasta["sequences"].items():
        labels, mask = (_partner(fasta, kind, record_id, path) for kind in ("sampled", "mask"))
        split, record = _flip_ss_record(path, entry, labels, mask)
        records[split].append(record)
    return records


def _flip_ss_record(path: Path, entry: FastaRecord, labels: FastaRecord, mask: FastaRecord
                    ) -> tuple[str, Record]:
    """One FLIP protein: its split and a record with IGNORE where mask.fasta has 0."""
    where = f"{path}:splits/sequences.fasta record {entry.id}"
    attrs = dict(w.split("=", 1) for w in labels.header.split()[1:] if "=" in w)
    key = (attrs.get("SET", ""), attrs.get("VALIDATION", "").lower())
    if key not in _FLIP_SPLIT:
        raise TaskDataError(f"{path}:splits/sampled.fasta record {entry.id}: header needs "
                            f"SET=train|test VALIDATION=True|False, got {labels.header!r}")
    check_sequence(entry.sequence, where)
    check_label_length(entry.sequence, labels.sequence, where, "labels in sampled.fasta")
    check_label_length(entry.sequence, mask.sequence, where, "mask values in mask.fasta")
    target = encode_labels(labels.sequence, f"{path}:splits/sampled.fasta record {entry.id}")
    resolved = _resolved(mask.sequence, f"{path}:splits/mask.fasta record {entry.id}")
    target[resolved == 0] = IGNORE
    return _FLIP_SPLIT[key], Record(entry.sequence, target, where)


def _partner(fasta: dict, kind: str, record_id: str, path: Path) -> FastaRecord:
    if record_id not in fasta[kind]:
        raise TaskDataError(f"{path}:splits/{kind}.fasta: no record {record_id} (it is in "
                            "splits/sequences.fasta)")
    return fasta[kind][record_id]


def _resolved(mask: str, where: str) -> np.ndarray:
    """'0110...' -> int array (L,) of 0/1."""
    values = np.frombuffer(mask.encode("latin-1", "replace"), dtype=np.uint8) - ord("0")
    bad = np.flatnonzero(values > 1)  # uint8 wrap-around makes every non-digit > 1
    if bad.size:
        raise TaskDataError(f"{where}: mask value {mask[int(bad[0])]!r} at residue "
                            f"{int(bad[0]) + 1} is not 0 or 1")
    return values


def read_netsurfp_csv(text: str, source: str) -> list[Record]:
    """A NetSurfP/ProtTrans ``*_HHblits.csv`` -> one record per row (scored: see module doc)."""
    records = []
    for number, row in csv_rows(text, source, NETSURFP_COLUMNS):
        where = f"{source} row {number}"
        residues = row["input"].split()
        if any(len(r) != 1 for r in residues):
            raise TaskDataError(f"{where}: column 'input' must hold one residue letter per "
                                "space-separated field")
        sequence = "".join(residues)
        check_sequence(sequence, where)
        labels = "".join(row["dssp3"].split())
        check_label_length(sequence, labels, where, "dssp3 labels")
        target = encode_labels(labels, where)
        for column in ("disorder", "cb513_mask"):
            scored = _binary_floats(row[column], where, column)
            check_label_length(sequence, scored, where, f"{column} values")
            target[~scored] = IGNORE
        records.append(Record(sequence, target, where))
    return records


def _binary_floats(text: str, where: str, column: str) -> np.ndarray:
    """'1.0 0.0 ...' -> bool array (L,); any value other than 0 or 1 is an error."""
    try:
        values = np.array(text.split(), dtype=np.float64)
    except ValueError:
        raise TaskDataError(f"{where}: column {column!r} holds a non-number") from None
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        raise TaskDataError(f"{where}: column {column!r} value {values[bad[0]]} at residue "
                            f"{int(bad[0]) + 1} is not 0 or 1")
    return values == 1
