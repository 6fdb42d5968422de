"""The user CSV task: column mapping, split values, extra test sets, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
from omegaconf import OmegaConf

from ptransfer.tasks.base import TaskDataError
from ptransfer.tasks.user_csv import load_csv_task

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"


@pytest.fixture(autouse=True)
def _torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def write_csv(tmp_path: Path, lines: list[str], name: str = "mine.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_config_needs_a_path():
    cfg = OmegaConf.load(CONF / "csv.yaml")
    assert OmegaConf.is_missing(cfg, "path")
    assert cfg._target_ == "ptransfer.tasks.user_csv.load_csv_task"


def test_config_with_renamed_columns_and_extra_test_set(tmp_path):
    path = write_csv(tmp_path, ["id,seq,fitness,fold", "1,MKV,0.5,train", "2,MKL,1.5,Train",
                                "3,MKI,2.5,val", "4,MKA,3.5,TEST", "5,MKC,4.5,holdout",
                                "6,MKD,5.5,"])
    cfg = OmegaConf.load(CONF / "csv.yaml")
    cfg.merge_with({"path": str(path), "name": "mine", "sequence_col": "seq",
                    "target_col": "fitness", "split_col": "fold"})
    task = hydra.utils.instantiate(cfg, _convert_="all")
    assert list(task.splits) == ["train", "val", "test", "holdout"]
    assert task.splits["train"].sequences == ["MKV", "MKL"]
    np.testing.assert_array_equal(task.splits["train"].targets, [0.5, 1.5])
    assert task.splits["holdout"].targets.tolist() == [4.5]
    assert (task.name, task.dataset, task.metric) == ("mine", "csv/mine.csv", "spearman")
    assert task.info["n_no_split"] == 1 and task.info["n_rows"] == 6


def test_classification_labels(tmp_path):
    path = write_csv(tmp_path, ["sequence,target,set", "MKV,soluble,train", "MKL,insoluble,train",
                                "MKI,soluble,val", "MKA,insoluble,test"])
    task = load_csv_task(path, kind="classification")
    assert task.classes == ["insoluble", "soluble"]
    assert task.splits["train"].targets.tolist() == [1, 0]
    assert task.metric == "accuracy"


def test_empty_split_values_are_dropped_and_logged(tmp_path, caplog):
    path = write_csv(tmp_path, ["sequence,target,set", "MKV,1,train", "MKL,2,", "MKI,3,val",
                                "MKA,4,test"])
    with caplog.at_level(logging.INFO):
        task = load_csv_task(path)
    assert sum(len(s) for s in task.splits.values()) == 3
    assert "dropped 1 rows with an empty 'set'" in caplog.text


def test_missing_file(tmp_path):
    with pytest.raises(TaskDataError, match=r"task\.path: no CSV file at .*nope\.csv"):
        load_csv_task(tmp_path / "nope.csv")


def test_no_val_rows(tmp_path):
    path = write_csv(tmp_path, ["sequence,target,set", "MKV,1,train", "MKA,4,test"])
    with pytest.raises(TaskDataError, match=r"mine\.csv: no rows with 'set' = val"):
        load_csv_task(path)


def test_no_test_rows(tmp_path):
    path = write_csv(tmp_path, ["sequence,target,set", "MKV,1,train", "MKA,4,val"])
    with pytest.raises(TaskDataError, match=r"no rows with 'set' = test \(or any other"):
        load_csv_task(path)


def test_bad_sequence_names_row(tmp_path):
    path = write_csv(tmp_path, ["sequence,target,set", "MKV,1,train", "MK1,2,val", "MKA,4,test"])
    with pytest.raises(TaskDataError, match=r"mine\.csv row 2: unknown residue '1' at position 3"):
        load_csv_task(path)


def test_non_numeric_target_names_column(tmp_path):
    path = write_csv(tmp_path, ["sequence,y,set", "MKV,1,train", "MKL,x,val", "MKA,4,test"])
    with pytest.raises(TaskDataError, match=r"row 2: column 'y' is not a number: 'x'"):
        load_csv_task(path, target_col="y")


def test_conflicting_duplicate_across_splits(tmp_path):
    path = write_csv(tmp_path, ["sequence,target,set", "MKV,1,train", "MKL,2,val", "MKV,3,test"])
    with pytest.raises(TaskDataError, match=r"row 1 \(train\) repeats the sequence of .*row 3 "
                                            r"\(test\) with a different target: target 3.0 vs 1.0"):
        load_csv_task(path)


def test_bad_kind(tmp_path):
    path = write_csv(tmp_path, ["sequence,target,set", "MKV,1,train"])
    with pytest.raises(TaskDataError, match=r"task\.kind must be one of"):
        load_csv_task(path, kind="ordinal")


# --- a cell that cannot run fails before any model or store file (issue 12, item 5) -----

@pytest.mark.parametrize(("family_model", "accepts_j"), [
    ("esm1_t6_43M_UR50S", False), ("esm1b_t33_650M_UR50S", False), ("esm2_t6_8M_UR50D", False),
    ("carp_600k", True), ("onehot", True),
    ("hf_esm2_t6_8M_UR50D", False), ("esmc_300m", False),  # transformers: the hub vocabularies
    ("antiberty", True),  # 20 residues; the others pass as [UNK], as its own runner does
])
def test_each_family_alphabet_is_known_without_weights(family_model, accepts_j):
    cfg = OmegaConf.load(CONF.parent / "model" / f"{family_model}.yaml")
    encoder = hydra.utils.instantiate(cfg, _convert_="all")  # no load(): no weights read
    assert set("ACDEFGHIKLMNPQRSTVWYXBZUO") <= set(encoder.residue_alphabet())
    assert ("J" in encoder.residue_alphabet()) is accepts_j
    where = {"MKJV": "mine.csv row 6"}
    if accepts_j:
        encoder.check_alphabet(["MKV", "MKJV"], where)
    else:
        with pytest.raises(ValueError, match=r"^mine\.csv row 6: residue 'J' at position 3 is "
                                             rf"outside the alphabet of model={family_model}"):
            encoder.check_alphabet(["MKV", "MKJV"], where)
    with pytest.raises(ValueError, match=r"^sequence 2: residue '\*' at position 2"):
        encoder.check_alphabet(["MKV", "M*V"])


def _cell_files(results: Path) -> list[str]:
    # Hydra's logs and the sweep-wide task fingerprint cache belong to no cell.
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")
                  if p.is_file() and "hydra" not in p.parts
                  and p.name != "task_fingerprints.json")


@pytest.mark.parametrize(("rows", "model", "kind", "words"), [
    # J at data row 6: fair-esm's ESM-2 alphabet lacks it; the task checks accept it
    (["MKVA,1,train", "MKLA,2,train", "MKIA,3,train", "MKAA,4,val", "MKCA,5,val",
      "MKJA,6,test", "MKDA,7,test"], "esm2_t6_8M_UR50D", "regression",
     "mine.csv row 6: residue 'J' at position 3 is outside the alphabet of "
     "model=esm2_t6_8M_UR50D"),
    (["MKVA,a,train", "MKLA,a,train", "MKAA,a,val", "MKDA,b,test"], "onehot", "classification",
     "mine.csv: task 'mine' is a classification task but its train split has 1 class(es)"),
    # Issue 28 item 13: a 1-row test set scored NaN silently, a 1-row train set ended done.
    (["MKVA,1,train", "MKLA,2,train", "MKAA,3,val", "MKCA,4,val", "MKDA,5,test"], "onehot",
     "regression", "mine.csv: split 'test' of task 'mine' has 1 sequence(s); every split "
     "needs at least 2"),
    (["MKVA,1,train", "MKAA,3,val", "MKCA,4,val", "MKDA,5,test", "MKEA,6,test"], "onehot",
     "regression", "mine.csv: split 'train' of task 'mine' has 1 sequence(s)"),
    (["MKVA,1,train", "MKLA,2,train", "MKAA,3,val", "MKDA,5,test", "MKEA,6,test"], "onehot",
     "regression", "mine.csv: split 'val' of task 'mine' has 1 sequence(s)"),
])
def test_cell_that_cannot_run_fails_before_model_and_store(tmp_path, monkeypatch, capsys,
                                                           rows, model, kind, words):
    from ptransfer.cli import main

    monkeypatch.chdir(tmp_path)
    path = write_csv(tmp_path, ["sequence,target,set", *rows])
    loaded = []
    monkeypatch.setattr("ptransfer.cell.encoder.load_encoder",
                        lambda *a, **k: loaded.append(a) or (_ for _ in ()).throw(AssertionError))
    code = main(["run", "task=csv", f"task.path={path}", f"task.kind={kind}", f"model={model}",
                 "ablation=random_init" if model != "onehot" else "ablation=pretrained",
                 "results_dir=res"])
    out = capsys.readouterr()
    assert code == 1 and not loaded  # failed, and never got as far as loading a model
    assert words in out.out + out.err
    cell = next((tmp_path / "res" / "cells").iterdir())
    status = json.loads((cell / "status.json").read_text())
    assert status["state"] == "failed" and words in status["error"]
    # Only the failure record: no config, no rows, no store, lock or temporary file.
    assert _cell_files(tmp_path / "res") == [f"cells/{cell.name}/status.json"]


@pytest.mark.parametrize("header,column", [
    ("sequence,target,set,target", "target"),
    ("sequence,target, sequence,set", "sequence"),  # names are stripped before comparing
])
def test_a_repeated_column_name_is_an_error_naming_file_and_column(tmp_path, header, column):
    # Issue 19 item 3: two `target` columns silently used the last one.
    path = write_csv(tmp_path, [header, "MKV,0.5,train,9.5", "MKL,1.5,val,8.5",
                                "MKI,2.5,test,7.5"])
    with pytest.raises(TaskDataError) as err:
        load_csv_task(path, kind="regression")
    assert str(path) in str(err.value) and f"column {column!r}" in str(err.value)
    assert "2 times" in str(err.value)
