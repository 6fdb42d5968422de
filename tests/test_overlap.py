"""Leakage: test sequences equal to, inside or containing a train/val sequence are counted
(task summary, rows) and removed with ``task.overlap=drop``; references are brute force."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SHARED_DATA, needs_data
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ptransfer.cell.run import run_cell
from ptransfer.tasks.base import TaskDataError
from ptransfer.tasks.overlap import contained_in, containing, overlap_mask
from ptransfer.tasks.user_csv import load_csv_task

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

TRAIN = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIKLMNPQ", "WWWYYYWWWYYY", "PPPPGGGGPPPP"]
VAL = ["LLLLKKKKLLLL", "QQQQNNNNQQQQ"]  # two: a split needs two sequences
TEST = {
    "AYIAKQRQIS": "inside train 0",
    "GGGACDEFGHIKLMNPQGGG": "contains train 1",
    "CCLLLLKKKKLLLLCC": "contains val 0",
    "KKKKLL": "inside val 0",
    "MNPQRSTVWY": "clean: shares only MNPQ with train 1",
    "HHHHEEEEHHHH": "clean",
}
CLEAN = ["MNPQRSTVWY", "HHHHEEEEHHHH"]


def brute(queries, references):
    return np.array([any(q in r or r in q for r in references) for q in queries])


def test_overlap_functions_equal_brute_force_on_random_sets():
    rng = random.Random(0)
    for _ in range(400):  # small alphabet and lengths: many containments, many ties
        refs = ["".join(rng.choice("ACD") for _ in range(rng.randint(1, 9)))
                for _ in range(rng.randint(1, 10))]
        queries = ["".join(rng.choice("ACD") for _ in range(rng.randint(1, 9)))
                   for _ in range(rng.randint(1, 10))]
        assert (overlap_mask(queries, refs) == brute(queries, refs)).all()
        inside = np.array([any(q in r for r in refs) for q in queries])
        holds = np.array([any(r in q for r in refs) for q in queries])
        assert (contained_in(queries, refs) == inside).all()
        assert (containing(queries, refs) == holds).all()


def test_equal_lengths_need_equality_and_a_separator_stops_cross_sequence_matches():
    # "CDEF" spans the boundary of "ABCD" and "EFGH": not inside either.
    assert overlap_mask(["CDEF", "ABCD", "EFGH"], ["ABCD", "EFGH"]).tolist() == [False, True, True]
    assert overlap_mask(["AB"], []).tolist() == [False]
    with pytest.raises(ValueError, match="line break"):
        overlap_mask(["AB\nC"], ["ABC"])


def write_csv(path: Path) -> Path:
    lines = ["sequence,target,set"]
    lines += [f"{s},{i},train" for i, s in enumerate(TRAIN)]
    lines += [f"{s},{i},val" for i, s in enumerate(VAL)]
    lines += [f"{s},{i},test" for i, s in enumerate(TEST)]
    lines += ["AAAWWWYYYWWWYYYAAA,1,extra", "SSSSTTTTSSSS,2,extra",  # a second test set
              "EEEERRRREEEE,3,extra"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_overlaps_are_counted_in_the_summary_and_kept_by_default(tmp_path):
    task = load_csv_task(write_csv(tmp_path / "t.csv"))
    fit = task.splits["train"].sequences + task.splits["val"].sequences
    expected = {name: int(brute(task.splits[name].sequences, fit).sum())
                for name in ("test", "extra")}
    assert expected == {"test": 4, "extra": 1}  # hand count, see TEST
    assert task.overlap_counts() == expected
    assert len(task.splits["test"]) == len(TEST)
    summary = task.summary()
    assert "overlapping train/val (substring either way): test=4, extra=1" in summary
    assert task.info["overlap"] == {"policy": "keep", "dropped": {}}


def test_drop_removes_substrings_either_way_from_every_test_set(tmp_path):
    task = load_csv_task(write_csv(tmp_path / "t.csv"), overlap="drop")
    assert task.splits["test"].sequences == CLEAN
    assert task.splits["test"].targets.tolist() == [4.0, 5.0]  # targets follow their rows
    assert task.splits["extra"].sequences == ["SSSSTTTTSSSS", "EEEERRRREEEE"]
    assert task.overlap_counts() == {"test": 0, "extra": 0}
    assert task.info["overlap"] == {"policy": "drop", "dropped": {"test": 4, "extra": 1}}
    assert "task.overlap=drop removed test=4, extra=1" in task.summary()
    assert len(task.splits["train"]) == len(TRAIN) and len(task.splits["val"]) == len(VAL)


def test_bad_policy_and_an_emptied_test_set_are_clear_errors(tmp_path):
    path = write_csv(tmp_path / "t.csv")
    with pytest.raises(ValueError, match=r"task.overlap must be one of \['keep', 'drop'\]"):
        load_csv_task(path, overlap="remove")
    leaky = tmp_path / "leaky.csv"
    leaky.write_text("sequence,target,set\nMKTAYIAKQR,1,train\nLLKKLL,2,val\nKTAYI,3,test\n")
    with pytest.raises(TaskDataError, match=r"leaky.csv.*task.overlap=drop.*'test'"):
        load_csv_task(leaky, overlap="drop")


def test_every_task_config_has_the_overlap_key():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for path in sorted((CONF_DIR / "task").glob("*.yaml")):
            cfg = compose("config", overrides=[f"task={path.stem}"])
            assert cfg.task.overlap == "keep", path.name


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_rows_carry_the_overlap_count_per_eval_set(tmp_path, policy):
    path = write_csv(tmp_path / "t.csv")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            "task=csv", f"task.path={path}", f"task.overlap={policy}", "model=onehot",
            f"results_dir={tmp_path / 'results'}", "extract.progress=false"])
    OmegaConf.resolve(cfg)
    rows = run_cell(cfg)
    counts = rows.groupby("eval_set")["n_test_overlap"].unique().to_dict()
    expected = {"val": 0, "test": 4, "extra": 1} if policy == "keep" else {
        "val": 0, "test": 0, "extra": 0}
    assert {k: v.tolist() for k, v in counts.items()} == {k: [v] for k, v in expected.items()}


@needs_data("flip_gb1")
def test_real_gb1_overlap_is_exact_equality_only():
    """GB1 (every sequence 56 residues): overlap means equality, which the duplicate policy
    already removes from train/val, so nothing overlaps."""
    from ptransfer.tasks.flip import load_flip_task

    task = load_flip_task("gb1_sampled", "gb1", "sampled", "regression", SHARED_DATA,
                          window=[0, 56])
    assert {len(s) for split in task.splits.values() for s in split.sequences} == {56}
    assert task.overlap_counts() == {"test": 0}


def test_pretraining_corpus_drops_substring_overlaps_both_ways(tmp_path, caplog):
    from ptransfer.pretrain.corpus import load_pretrain_data

    test = ["MKTAYIAKQRQ", "WWWYYYWWW"]
    candidates = {
        "MKTAYIAKQRQ": True,  # equal
        "KTAYIAK": True,  # inside a test sequence
        "GGGMKTAYIAKQRQGGG": True,  # contains one
        "aaWWWYYYWWWaa": True,  # contains one, lower case
        "MKTAYIAKQRA": False,  # near miss
        "GGGGHHHHIIII": False,
        "PPPPLLLLKKKK": False,
        "ACDEFGHIKLMN": False,
    }
    (tmp_path / "corpus.fasta").write_text(
        "".join(f">c{i}\n{s}\n" for i, s in enumerate(candidates)))
    (tmp_path / "test.fasta").write_text("".join(f">t{i}\n{s}\n" for i, s in enumerate(test)))
    cfg = {"root": "unused", "tasks": [], "splits": ["train"], "exclude_tasks": [],
           "fasta": str(tmp_path / "corpus.fasta"), "task_conf_dir": None, "max_len": 50,
           "exclude_fasta": [str(tmp_path / "test.fasta")], "val_fraction": 0.25,
           "max_val_sequences": 10, "split_seed": 0}
    with caplog.at_level("INFO"):
        data = load_pretrain_data(cfg)
    expected = {s.upper() for s, leaks in candidates.items() if not leaks}
    assert set(data.train + data.val) == expected
    assert data.n_removed == 4
    assert "4 removed as test-set sequences" in caplog.text
