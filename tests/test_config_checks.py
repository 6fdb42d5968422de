"""Config mistakes are one line naming the key, before anything runs (issue 19 items 4, 5, 13).

Everything runs ``ptransfer.cli.main`` in-process; nothing here trains or embeds.
"""

from __future__ import annotations

import pytest

from ptransfer.cli import main


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _main(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def _one_error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out, out
    return lines[0]


# -- item 4: pretrain rejects unknown keys as run does ----------------------------------------

@pytest.mark.parametrize("override,key", [("+max_step=3", "max_step"),
                                          ("+schedule.max_step=3", "schedule.max_step"),
                                          ("+data.fastaa=x.fa", "data.fastaa")])
def test_pretrain_rejects_an_unknown_key_listing_the_known_ones(work, capsys, override, key):
    code, out = _main(capsys, "pretrain", override, "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and line.startswith("ptransfer pretrain: error: unknown config key(s)")
    assert f"'{key}'" in line
    known = "max_steps" if key.startswith("schedule") else ("fasta" if "data" in key
                                                            else "schedule")
    assert known in line.split("; known")[1]
    assert not (work / "res").exists()  # nothing trained, nothing written


def test_pretrain_checks_value_types(work, capsys):
    code, out = _main(capsys, "pretrain", "seed=abc", "results_dir=res")
    assert code == 1 and "config key 'seed': expected an integer" in _one_error_line(out)


# -- item 5: names that become paths are safe identifiers ---------------------------------

def _small_csv(path):
    rows = ["sequence,target,set"] + [f"{s},{i * 0.1},{split}" for i, (s, split) in enumerate(
        [("MKV", "train"), ("MKL", "train"), ("MKI", "val"), ("MKA", "val"), ("MKC", "test"),
         ("MKD", "test")])]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("override,key", [
    ("task.name=../../x", "task.name"),
    ("task.name=proj/x", "task.name"),
    ("task.name=.hidden", "task.name"),
    ("model.name=a/b", "model.name"),
    ("checkpoint=../up", "checkpoint"),
])
def test_names_that_become_paths_must_be_safe(work, capsys, override, key):
    data = _small_csv(work / "t.csv")
    code, out = _main(capsys, "run", "task=csv", f"task.path={data}", "model=onehot",
                      "results_dir=res/inner", override)
    line = _one_error_line(out)
    assert code == 1 and f"config key {key!r}" in line and "letters, digits" in line
    assert not (work / "res").exists() and not list(work.parent.glob("x"))


def test_a_csv_stem_that_is_not_a_safe_name_says_to_set_task_name(work, capsys):
    data = _small_csv(work / "my data.csv")
    code, out = _main(capsys, "run", "task=csv", f"task.path={data}", "model=onehot",
                      "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and "'task.name'" in line and "'my data'" in line
    assert "set task.name=" in line


def test_pretrain_arch_name_must_be_safe(work, capsys):
    code, out = _main(capsys, "pretrain", "arch.name=../x", "results_dir=res")
    assert code == 1 and "config key 'arch.name'" in _one_error_line(out)


# -- item 11: one task name, one task, checked at sweep start -----------------------------

def test_a_sweep_with_two_tasks_under_one_name_is_refused_before_it_runs(work, capsys):
    one, two = work / "one", work / "two"
    one.mkdir(), two.mkdir()
    first, second = _small_csv(one / "x.csv"), _small_csv(two / "x.csv")
    code, out = _main(capsys, "run", "-m", "task=csv", f"task.path={first},{second}",
                      "model=onehot", "results_dir=res", "extract.progress=false")
    line = _one_error_line(out)
    assert code == 1 and "task.name 'x' names 2 different tasks" in line
    assert str(first) in line and str(second) in line and "own name" in line
    assert not (work / "res" / "cells").exists()  # nothing ran
    code, out = _main(capsys, "run", "-m", "task=csv", f"task.path={first}",
                      "task.overlap=keep,drop", "model=onehot", "results_dir=res")
    line = _one_error_line(out)
    assert code == 1 and "task.name 'x' names 2 different tasks" in line
    assert "task.overlap=" in line and " vs " in line


def test_distinct_task_names_in_a_preset_sweep_pass(work):
    from ptransfer.cli import CONF_DIR
    from ptransfer.grid.task_names import check_task_names

    assert check_task_names(CONF_DIR, ["+experiment=own_checkpoints"]) == 4
