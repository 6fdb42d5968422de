"""FLIP loader: real GB1 splits (skipped without ../shared/data), configs, hand-made zips."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
from cli_helpers import SHARED_DATA as SHARED
from cli_helpers import needs_data
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from ptransfer.data import DataUnavailable
from ptransfer.tasks.base import Task, TaskDataError
from ptransfer.tasks.flip import load_flip_task

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"
needs_gb1 = needs_data("flip_gb1/splits.zip")

# FLIP GB1 counts (SOURCES.md): train without validation flag, validation=True, test.
GB1_COUNTS = {"two_vs_rest": (381, 43, 8309), "low_vs_high": (4580, 509, 3644),
              "sampled": (6289, 699, 1745)}
GB1_DOMAIN = "MQYKLILNGKTLKGETTTEAVDAATAEKVFKQYANDNGVDGEWTYDDATKTFTVTE"  # 5LDE chain A 1-56


@pytest.fixture(autouse=True)
def _torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def instantiate_config(name: str, root: Path | str, **overrides) -> Task:
    """conf/task/<name>.yaml instantiated the way a cell does, with data.root = root."""
    task_cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg = OmegaConf.create({"data": {"root": str(root)}, "task": task_cfg})
    for key, value in overrides.items():
        cfg.task[key] = value
    return hydra.utils.instantiate(cfg.task, _convert_="all")


@needs_gb1
@pytest.mark.parametrize("split", list(GB1_COUNTS))
def test_gb1_config_counts_and_window(split):
    task = instantiate_config(f"gb1_{split}", SHARED)
    n_train, n_val, n_test = GB1_COUNTS[split]
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [n_train, n_val, n_test]
    assert task.name == f"gb1_{split}"
    assert task.dataset == f"flip_gb1/{split}"
    assert (task.level, task.kind, task.metric) == ("protein", "regression", "spearman")
    assert task.info["window"] == [0, 56]
    assert task.info["n_no_set"] == 0
    assert all(sum(task.info["splits"][s][k] for k in ("duplicates", "test_overlap",
                                                       "train_overlap")) == 0
               for s in task.splits)  # GB1 needs no drops
    every = [s for sp in task.splits.values() for s in sp.sequences]
    assert {len(s) for s in every} == {56}
    assert len(set(every)) == 8733  # windowing keeps every variant distinct


@needs_gb1
def test_gb1_window_holds_all_four_mutated_sites():
    full = load_flip_task("full", "gb1", "two_vs_rest", "regression", SHARED, window=None)
    sequences = [s for sp in full.splits.values() for s in sp.sequences]
    assert {len(s) for s in sequences} == {265}
    parent = next(s for s in sequences if s.startswith(GB1_DOMAIN))
    changed = {i for s in sequences for i, (a, b) in enumerate(zip(s, parent)) if a != b}
    assert changed == {38, 39, 40, 53}  # V39 D40 G41 V54, 0-based, all < 56
    assert [parent[i] for i in sorted(changed)] == ["V", "D", "G", "V"]


@needs_gb1
def test_gb1_targets_match_the_csv():
    task = load_flip_task("t", "gb1", "two_vs_rest", "regression", SHARED, window=[0, 56])
    train = task.splits["train"]
    assert train.targets.dtype == np.float64
    # first data rows of splits/two_vs_rest.csv: wild type (1.0), then V39I (1.4459050863)
    assert train.sequences[0] == GB1_DOMAIN and train.targets[0] == 1.0
    assert train.sequences[1][38] == "I" and train.targets[1] == pytest.approx(1.4459050863)


@needs_gb1
def test_window_hiding_a_mutated_site_is_a_conflict():
    with pytest.raises(TaskDataError, match=r"repeats the sequence of .* with a different target"):
        load_flip_task("t", "gb1", "two_vs_rest", "regression", SHARED, window=[0, 50])


@pytest.mark.parametrize("name, dataset", [("aav_one_vs_many", "aav"),
                                           ("aav_two_vs_many", "aav"),
                                           ("meltome_mixed", "meltome"),
                                           ("scl_balanced", "scl")])
def test_missing_flip_zip_says_where_and_how(tmp_path, name, dataset):
    with pytest.raises(InstantiationException) as err:
        instantiate_config(name, tmp_path)
    # hydra wraps what the loader raised; the CLI / cell show the cause
    assert isinstance(err.value.__cause__, DataUnavailable)
    message = str(err.value.__cause__)
    assert f"missing data file {tmp_path / f'flip_{dataset}' / 'splits.zip'}" in message
    assert f"ptransfer data --root {tmp_path} download {dataset}" in message
    assert f"https://github.com/J-SNACKKB/FLIP/raw/main/splits/{dataset}/splits.zip" in message


def write_zip(root: Path, dataset: str, member: str, lines: list[str]) -> None:
    path = root / f"flip_{dataset}" / "splits.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, "\n".join(lines) + "\n")


@pytest.mark.parametrize("name, dataset, member", [
    ("aav_one_vs_many", "aav", "splits/one_vs_many.csv"),
    ("aav_two_vs_many", "aav", "splits/two_vs_many.csv"),
    ("meltome_mixed", "meltome", "splits/mixed_split.csv")])
def test_regression_configs_read_their_member(tmp_path, name, dataset, member):
    write_zip(tmp_path, dataset, member, ["sequence,target,set,validation", "MKV,0.5,train,",
                                          "MKL,1.5,train,True", "MKI,-2,test,"])
    task = instantiate_config(name, tmp_path)
    assert task.name == name and task.dataset == f"flip_{dataset}/{Path(member).stem}"
    assert task.splits["test"].targets.tolist() == [-2.0]
    assert task.info["window"] is None


def test_scl_classes_sorted_and_encoded(tmp_path):
    rows = ["sequence,target,set,validation", "MKV,Nucleus,train,", "MKL,Cytoplasm,train,",
            "MKI,Nucleus,train,True", "MKA,Plastid,test,", "MKC,Cytoplasm,test,"]
    write_zip(tmp_path, "scl", "splits/balanced.csv", rows)
    task = instantiate_config("scl_balanced", tmp_path)
    assert task.classes == ["Cytoplasm", "Nucleus", "Plastid"]
    assert (task.kind, task.metric, task.n_classes) == ("classification", "accuracy", 3)
    assert task.splits["train"].targets.tolist() == [1, 0]
    assert task.splits["val"].targets.tolist() == [1]
    assert task.splits["test"].targets.tolist() == [2, 0]
    assert task.splits["test"].targets.dtype == np.int64


def test_rows_without_set_are_dropped_and_logged(tmp_path, caplog):
    rows = ["sequence,target,set,validation", "MKV,1,train,", "MKL,2,,", "MKI,3,train,True",
            "MKA,4,,", "MKC,5,test,False"]
    write_zip(tmp_path, "aav", "splits/one_vs_many.csv", rows)
    with caplog.at_level(logging.INFO):
        task = instantiate_config("aav_one_vs_many", tmp_path)
    assert task.info["n_no_set"] == 2 and task.info["n_rows"] == 5
    assert sum(len(s) for s in task.splits.values()) == 3
    assert "dropped 2 rows with no set" in caplog.text


def test_window_longer_than_sequence(tmp_path):
    write_zip(tmp_path, "gb1", "splits/toy.csv", ["sequence,target,set,validation",
                                                  "MKVL,1,train,", "MKV,2,test,"])
    with pytest.raises(TaskDataError, match=r"toy\.csv row 2: task\.window \[0, 4\) does not fit "
                                            r"a sequence of 3 residues"):
        load_flip_task("t", "gb1", "toy", "regression", tmp_path, window=[0, 4])


@pytest.mark.parametrize("window", [[5, 5], [-1, 3], ["a", 2], [1]])
def test_bad_window_config(tmp_path, window):
    with pytest.raises(TaskDataError, match=r"task\.window"):
        load_flip_task("t", "gb1", "toy", "regression", tmp_path, window=window)


def test_bad_kind_and_dataset_config(tmp_path):
    with pytest.raises(TaskDataError, match=r"task\.kind must be one of"):
        load_flip_task("t", "gb1", "toy", "ranking", tmp_path)
    with pytest.raises(TaskDataError, match=r"task\.dataset must be one of"):
        load_flip_task("t", "gfp", "toy", "regression", tmp_path)


def test_split_without_val_rows_is_an_error(tmp_path):
    write_zip(tmp_path, "gb1", "splits/toy.csv", ["sequence,target,set,validation",
                                                  "MKVL,1,train,", "MKV,2,test,"])
    with pytest.raises(TaskDataError, match=r"toy\.csv: no rows for split 'val'"):
        load_flip_task("t", "gb1", "toy", "regression", tmp_path)
