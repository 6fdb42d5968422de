"""Bad input, one test per case: each must raise TaskDataError naming file, row and problem."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ptransfer.tasks.base import IGNORE, TaskDataError
from ptransfer.tasks.flip import load_flip_task
from ptransfer.tasks.user_csv import load_csv_task
from ptransfer.tasks.validate import (
    ALPHABET,
    Record,
    check_classes,
    check_sequence,
    parse_number,
    resolve_duplicates,
    source_rows,
)

HEADER = "sequence,target,set,validation"
GOOD_ROWS = ["ACDE,1.0,train,", "ACDF,2.0,train,", "ACDG,3.0,train,True", "ACDH,4.0,test,"]


@pytest.fixture(autouse=True)
def _torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def write_flip_zip(root: Path, rows: list[str], header: str = HEADER, dataset: str = "gb1",
                   split: str = "toy") -> Path:
    """A FLIP-layout zip at root/flip_<dataset>/splits.zip holding splits/<split>.csv."""
    path = root / f"flip_{dataset}" / "splits.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"splits/{split}.csv", "\n".join([header, *rows]) + "\n")
    return path


def load_toy(root: Path, kind: str = "regression", **kwargs):
    return load_flip_task("toy", "gb1", "toy", kind, root, **kwargs)


def replace_row(index: int, row: str) -> list[str]:
    rows = list(GOOD_ROWS)
    rows[index] = row
    return rows


def test_good_toy_file_loads(tmp_path):
    write_flip_zip(tmp_path, GOOD_ROWS)
    task = load_toy(tmp_path)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 2, "val": 1, "test": 1}


def test_alphabet_is_canonical_plus_ambiguous():
    assert ALPHABET == set("ACDEFGHIKLMNPQRSTVWY") | set("BZXUOJ")
    check_sequence("ACDEFGHIKLMNPQRSTVWYBZXUOJ", "x")  # no error


def test_unknown_residue_names_file_row_letter(tmp_path):
    write_flip_zip(tmp_path, replace_row(1, "AC*F,2.0,train,"))
    with pytest.raises(TaskDataError, match=r"splits\.zip:splits/toy\.csv row 2: unknown "
                                            r"residue '\*' at position 3"):
        load_toy(tmp_path)


def test_lowercase_residue_is_called_lowercase(tmp_path):
    write_flip_zip(tmp_path, replace_row(2, "ACdG,3.0,train,True"))
    with pytest.raises(TaskDataError, match=r"row 3: lowercase residue 'd' at position 3"):
        load_toy(tmp_path)


def test_empty_sequence(tmp_path):
    write_flip_zip(tmp_path, replace_row(0, ",1.0,train,"))
    with pytest.raises(TaskDataError, match=r"row 1: empty sequence"):
        load_toy(tmp_path)


def test_missing_column_lists_missing_and_found(tmp_path):
    write_flip_zip(tmp_path, ["ACDE,1.0,train"], header="sequence,target,set")
    with pytest.raises(TaskDataError, match=r"toy\.csv: missing column\(s\) \['validation'\]; "
                                            r"found \['sequence', 'target', 'set'\]"):
        load_toy(tmp_path)


def test_non_numeric_target(tmp_path):
    write_flip_zip(tmp_path, replace_row(3, "ACDH,high,test,"))
    with pytest.raises(TaskDataError, match=r"row 4: column 'target' is not a number: 'high'"):
        load_toy(tmp_path)


def test_nan_target(tmp_path):
    write_flip_zip(tmp_path, replace_row(0, "ACDE,nan,train,"))
    with pytest.raises(TaskDataError, match=r"row 1: column 'target' is 'nan', not a finite"):
        load_toy(tmp_path)


def test_empty_target_in_regression(tmp_path):
    write_flip_zip(tmp_path, replace_row(0, "ACDE,,train,"))
    with pytest.raises(TaskDataError, match=r"row 1: column 'target' is not a number: ''"):
        load_toy(tmp_path)


def test_empty_class_label(tmp_path):
    write_flip_zip(tmp_path, ["ACDE,a,train,", "ACDF, ,train,True", "ACDG,b,test,"])
    with pytest.raises(TaskDataError, match=r"row 2: column 'target' is empty"):
        load_toy(tmp_path, kind="classification")


def test_same_sequence_different_target_within_split(tmp_path):
    write_flip_zip(tmp_path, [*GOOD_ROWS, "ACDF,2.5,train,"])
    with pytest.raises(TaskDataError, match=r"row 5 \(train\) repeats the sequence of .*row 2 "
                                            r"\(train\) with a different target: "
                                            r"target 2.0 vs 2.5"):
        load_toy(tmp_path)


def test_same_sequence_different_target_across_splits(tmp_path):
    write_flip_zip(tmp_path, [*GOOD_ROWS, "ACDH,9.0,train,"])
    with pytest.raises(TaskDataError, match=r"row 5 \(train\) repeats the sequence of .*row 4 "
                                            r"\(test\) with a different target"):
        load_toy(tmp_path)


def test_exact_duplicates_are_dropped_and_counted(tmp_path, caplog):
    write_flip_zip(tmp_path, [*GOOD_ROWS, "ACDE,1.0,train,", "ACDE,1.0,train,"])
    with caplog.at_level(logging.INFO):
        task = load_toy(tmp_path)
    assert task.splits["train"].sequences == ["ACDE", "ACDF"]
    assert task.info["splits"]["train"]["duplicates"] == 2
    assert "dropped 2 exact duplicates from train" in caplog.text


def test_fit_copy_of_test_sequence_is_dropped_from_fit(tmp_path):
    write_flip_zip(tmp_path, [*GOOD_ROWS, "ACDH,4.0,train,", "ACDE,1.0,train,True"])
    task = load_toy(tmp_path)
    assert task.splits["test"].sequences == ["ACDH"]
    assert "ACDH" not in task.splits["train"].sequences
    assert task.splits["val"].sequences == ["ACDG"]  # the val copy of a train row goes
    assert task.info["splits"]["train"]["test_overlap"] == 1
    assert task.info["splits"]["val"]["train_overlap"] == 1


def test_wrong_field_count(tmp_path):
    write_flip_zip(tmp_path, replace_row(1, "ACDF,2.0,train,,extra"))
    with pytest.raises(TaskDataError, match=r"row 2: 5 fields, the header has 4"):
        load_toy(tmp_path)


def test_unknown_set_value(tmp_path):
    write_flip_zip(tmp_path, replace_row(1, "ACDF,2.0,valid,"))
    with pytest.raises(TaskDataError, match=r"row 2: column 'set' is 'valid'"):
        load_toy(tmp_path)


def test_bad_validation_flag(tmp_path):
    write_flip_zip(tmp_path, replace_row(2, "ACDG,3.0,train,maybe"))
    with pytest.raises(TaskDataError, match=r"row 3: column 'validation' is 'maybe'"):
        load_toy(tmp_path)


def test_missing_zip_member_lists_members(tmp_path):
    write_flip_zip(tmp_path, GOOD_ROWS, split="other")
    with pytest.raises(TaskDataError, match=r"no member 'splits/toy\.csv' in the archive; it "
                                            r"holds splits/other\.csv"):
        load_toy(tmp_path)


def test_corrupt_zip(tmp_path):
    path = tmp_path / "flip_gb1" / "splits.zip"
    path.parent.mkdir()
    path.write_bytes(b"not a zip at all")
    with pytest.raises(TaskDataError, match=r"splits\.zip: not a readable zip archive"):
        load_toy(tmp_path)


def test_not_utf8(tmp_path):
    path = tmp_path / "flip_gb1" / "splits.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("splits/toy.csv", HEADER.encode() + b"\n\xff\xfe,1,train,\n")
    with pytest.raises(TaskDataError, match=r"toy\.csv: not UTF-8 text"):
        load_toy(tmp_path)


def test_user_csv_missing_column_names_file(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("seq,y,split\nACDE,1,train\n")
    with pytest.raises(TaskDataError, match=r"mine\.csv: missing column\(s\) \['sequence', "
                                            r"'target', 'set'\]"):
        load_csv_task(path)


def test_parse_number_accepts_numbers_and_rejects_inf():
    assert parse_number(" 2.5e-1 ", "f row 1", "t") == pytest.approx(0.25)
    with pytest.raises(TaskDataError, match=r"f row 1: column 't' is 'inf'"):
        parse_number("inf", "f row 1", "t")


def test_residue_targets_agree_when_scored_residues_match():
    a = Record("ACDE", np.array([0, 1, IGNORE, IGNORE]), "f record a")
    b = Record("ACDE", np.array([IGNORE, IGNORE, 2, 0]), "f record b")
    kept, stats = resolve_duplicates({"train": [Record("KL", np.array([0, 0]), "t")],
                                      "val": [Record("M", np.array([1]), "v")],
                                      "cb513": [a, b]}, "f")
    assert kept["cb513"] == [a, b]  # different masks: both score their own residues
    assert list(kept) == ["train", "val", "cb513"]
    assert stats["cb513"]["duplicates"] == 0


def test_residue_targets_conflict_names_residue():
    a = Record("ACDE", np.array([0, 1, IGNORE, 2]), "f record a")
    b = Record("ACDE", np.array([IGNORE, 1, 2, 1]), "f record b")
    with pytest.raises(TaskDataError, match=r"f record b \(test\) repeats the sequence of f "
                                            r"record a \(test\) with a different target: "
                                            r"residue 4 labelled 2 vs 1"):
        resolve_duplicates({"test": [a, b]}, "f")


def test_header_only_file_has_no_rows(tmp_path):
    write_flip_zip(tmp_path, [])
    with pytest.raises(TaskDataError, match=r"toy\.csv: no rows for split 'train'"):
        load_toy(tmp_path)


# --- checks made after loading, before any model (issue 12, item 5) ---------------------

def _csv_task(tmp_path, rows: list[str], kind: str = "classification"):
    path = tmp_path / "classes.csv"
    path.write_text("sequence,target,set\n" + "\n".join(rows) + "\n")
    return load_csv_task(path, kind=kind)


def test_single_training_class_fails_naming_the_file(tmp_path):
    task = _csv_task(tmp_path, ["MKV,a,train", "MKL,a,train", "MKI,a,val", "MKA,b,test"])
    with pytest.raises(TaskDataError, match=r"classes\.csv: task 'classes' is a classification "
                                            r"task but its train split has 1 class\(es\) \['a'\]"):
        check_classes(task)


def test_class_only_in_a_test_set_is_a_warning(tmp_path, caplog):
    task = _csv_task(tmp_path, ["MKV,a,train", "MKL,b,train", "MKI,a,val", "MKE,b,val",
                                "MKA,c,test", "MKC,b,test"])
    with caplog.at_level(logging.WARNING):
        check_classes(task)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{tmp_path / 'classes.csv'}: class(es) ['c'] appear in test but "
                        "never in train: the probe can never predict them"]


def test_two_training_classes_and_regression_pass_silently(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        check_classes(_csv_task(tmp_path, ["MKV,a,train", "MKL,b,train", "MKI,a,val",
                                           "MKE,b,val", "MKA,b,test", "MKC,a,test"]))
        check_classes(_csv_task(tmp_path, ["MKV,1,train", "MKL,1,train", "MKI,2,val",
                                           "MKE,1,val", "MKA,3,test", "MKC,2,test"],
                                kind="regression"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_source_rows_map_each_sequence_to_its_first_row(tmp_path):
    task = _csv_task(tmp_path, ["MKV,1,train", "MKL,2,train", "MKI,3,val", "MKV,1,test"],
                     kind="regression")
    rows = task.info["source_rows"]
    where = str(tmp_path / "classes.csv")
    # MKV (row 1, train) is also a test sequence: dropped from train, kept at its test row
    assert rows == {"MKV": f"{where} row 4", "MKL": f"{where} row 2", "MKI": f"{where} row 3"}
    assert source_rows({"train": [Record("A", 1.0, "x row 1"), Record("A", 1.0, "x row 2")]}) \
        == {"A": "x row 1"}


def test_a_split_needs_two_labelled_sequences(tmp_path):
    # Issue 28 item 13; per residue a sequence counts only when one of its residues is scored.
    from ptransfer.tasks.base import Split, Task
    from ptransfer.tasks.validate import check_split_sizes

    def split(*labels):
        return Split(["MKV" * (i + 1) for i in range(len(labels))],
                     [np.full(3 * (i + 1), y) for i, y in enumerate(labels)])

    task = Task("toy", "residue", "classification",
                {"train": split(0, 1), "val": split(0, IGNORE), "test": split(1, 0)},
                dataset="toy", metric="accuracy", classes=["a", "b"])
    with pytest.raises(TaskDataError, match=r"^toy: split 'val' of task 'toy' has 1 "
                                            r"sequence\(s\) with a label; every split needs "
                                            r"at least 2"):
        check_split_sizes(task)
    task.splits["val"] = split(0, 1)
    check_split_sizes(task)
