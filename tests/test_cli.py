"""The command line (issue 12, items 4, 6, 10-13, 16): help, version, data root, -m anywhere,
config errors that name the key, a read-only results_dir, CSV task names, smoke's own folder.

Everything runs ``ptransfer.cli.main`` in-process (a subprocess per case would cost seconds
of start-up each); the one-hot baseline on a tiny CSV keeps the runs that do run fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import SHARED_DATA, main_output, needs_data

from ptransfer import __version__
from ptransfer.cli import COMMANDS, SUMMARY
from ptransfer.data import DATASETS


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_help_lists_every_command_with_a_line_and_an_example(work, capsys, argv):
    code, out = main_output(capsys, *argv)
    assert code == 0
    assert "parse, dispatch" not in out  # not the module docstring
    for name in COMMANDS:
        assert name in SUMMARY, f"{name} has no help line"
        line, example = SUMMARY[name]
        assert f"  {name} " in out and line in out and f"e.g. {example}" in out
        assert example.split()[1] == name
    for name in ("run", "plan", "collect", "report", "data", "pretrain"):
        assert f"  {name} " in out
    assert "--version" in out


def test_version(work, capsys):
    assert main_output(capsys, "--version") == (0, f"ptransfer {__version__}\n")


def test_plan_help_is_help_not_a_traceback(work, capsys):
    code, out = main_output(capsys, "plan", "--help")
    assert code == 0 and out.startswith("usage: ptransfer plan")
    assert "Traceback" not in out and not (work / "results").exists()


@pytest.mark.parametrize("form", [
    ["data", "list", "data.root=ROOT"],
    ["data", "list", "--root", "ROOT"],
    ["data", "list", "--root=ROOT"],
    ["data", "--root", "ROOT", "list"],
    ["data", "data.root=ROOT", "list"],
])
def test_data_root_forms(work, capsys, form):
    root = work / "myroot"
    (root / "flip_gb1").mkdir(parents=True)
    (root / "flip_gb1" / "splits.zip").write_bytes(b"not the real file")
    code, out = main_output(capsys, *[str(root) if a == "ROOT" else a.replace("ROOT", str(root))
                                for a in form])
    assert code == 0, out
    assert out.splitlines()[0] == f"data root {root}"  # the listing says where it looked
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if not line.startswith(" ")}
    assert set(lines) == set(DATASETS)
    # The file is there (with the wrong bytes): the listing looked in this root, not data/.
    assert "missing" not in lines["gb1"] and "missing" in lines["aav"]


def test_data_root_option_without_a_value_is_an_error(work, capsys):
    code, out = main_output(capsys, "data", "list", "--root")
    assert code == 1 and "--root needs a directory" in out


@pytest.mark.parametrize(("override", "words"), [
    ("+seeed=1", "unknown config key(s) ['seeed']; known top-level keys: "),
    ("seed=abc", "config key 'seed': expected an integer, got 'abc'"),
    ("seed=1.5", "config key 'seed': expected an integer, got 1.5"),
    ("subsample={train: -5}", "config key 'subsample.train': expected a non-negative integer"),
    ("subsample=7", "config key 'subsample': expected null or a mapping"),
    ("extract.toks_per_batch=many", "config key 'extract.toks_per_batch': expected an integer"),
    ("force=yes", "config key 'force': expected true or false"),
    ("task=nope", "Could not find 'task/nope'"),
    ("seed=1,abc", "config key 'seed': expected an integer, got 'abc'"),
    ("model=onehot,nope", "Could not find 'model/nope'"),
])
@pytest.mark.parametrize("command", ["run", "plan"])
def test_bad_config_names_the_key_and_runs_nothing(work, capsys, command, override, words):
    code, out = main_output(capsys, command, "+experiment=smoke", "results_dir=res", override)
    assert code == 1, out
    assert f"ptransfer {command}: error: " in out and words in out
    assert "Traceback" not in out and "Config search path" not in out
    assert not (work / "res" / "cells").exists()
    if override.startswith("+seeed"):
        for key in ("seed", "task", "model", "results_dir", "subsample", "extract"):
            assert key in out.split("known top-level keys: ")[1]


def test_read_only_results_dir_is_one_line(work, capsys):
    if os.geteuid() == 0:  # root writes through file modes; /sys refuses even root
        target = Path("/sys/ptransfer_not_writable/res")
        if os.access("/sys", os.W_OK) and not Path("/sys").is_mount():
            pytest.skip("no directory here that root cannot write")
    else:
        locked = work / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        target = locked / "res"
    code, out = main_output(capsys, "run", "+experiment=smoke", f"results_dir={target}")
    assert code == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines == [f"ptransfer run: error: results_dir={target}: cannot write there "
                     f"({lines[0].split('(')[1].split(')')[0]}); choose a writable results_dir"]
    assert "Traceback" not in out and "PermissionError" not in out


def _csv(path: Path, rng: np.random.Generator, n: int = 60) -> Path:
    """A small regression CSV in the default column names (sequence, target, set)."""
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    seqs = ["".join(rng.choice(aa, 12)) for _ in range(n)]
    sets = ["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4)
    frame = pd.DataFrame({"sequence": seqs, "target": rng.normal(size=n), "set": sets})
    frame.to_csv(path, index=False)
    return path


def test_multirun_flag_anywhere_and_csv_tasks_collect_side_by_side(work, capsys):
    rng = np.random.default_rng(0)
    first, second = _csv(work / "alpha.csv", rng), _csv(work / "beta.csv", rng)
    # -m after the overrides, as Hydra itself accepts it
    code, out = main_output(capsys, "run", "results_dir=res", "task=csv", "model=onehot",
                      f"task.path={first},{second}", "extract.progress=false", "-m")
    assert code == 0, out
    assert "sweep: 2 cells: 2 run" in out
    assert list((work / "res" / "hydra").glob("multirun_*"))
    code, out = main_output(capsys, "collect", "res")
    assert code == 0, out
    merged = pd.read_csv(work / "res" / "results.csv")
    assert sorted(merged.task.unique()) == ["alpha", "beta"]  # each file's stem
    assert merged.cell_id.nunique() == 2 and merged.cell_id.str.startswith(("alpha", "beta")).all()


def test_collect_flags_two_datasets_under_one_task_name(work, capsys):
    """Two different files under one explicit task name: each cell stays its own arm (rows
    are keyed by data fingerprint, so nothing is pooled or compared across them) and the
    summary flags the task as mixed."""
    rng = np.random.default_rng(1)
    one, two = work / "one", work / "two"
    one.mkdir(), two.mkdir()
    for folder in (one, two):
        code, out = main_output(capsys, "run", "results_dir=res", "task=csv", "model=onehot",
                          f"task.path={_csv(folder / 'data.csv', rng)}", "task.name=same",
                          "extract.progress=false")
        assert code == 0, out
    assert len(list((work / "res" / "cells").iterdir())) == 2
    code, out = main_output(capsys, "collect", "res")
    assert code == 0, out
    intervals = pd.read_csv(work / "res" / "intervals.csv")
    assert intervals["data_fingerprint"].nunique() == 2  # two baselines, never pooled
    assert "mixed datasets: task 'same' has 2 data fingerprints" in \
        (work / "res" / "summary.md").read_text()


def test_smoke_preset_has_its_own_results_dir(work, capsys):
    from hydra import compose, initialize_config_dir

    from ptransfer.cli import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        smoke = compose("config", overrides=["+experiment=smoke"])
        default = compose("config")
    smoke_dir, results = Path(smoke.results_dir), Path(default.results_dir)
    # Not inside results/: collect reads every rows.csv below its folder (rglob).
    assert smoke_dir.resolve() != results.resolve()
    assert results.resolve() not in smoke_dir.resolve().parents
    assert smoke.store_dir.startswith(str(smoke.results_dir))


needs_gb1 = needs_data("flip_gb1/splits.zip")


@needs_gb1
def test_data_list_on_the_shared_copy(work, capsys):
    code, out = main_output(capsys, "data", "list", f"data.root={SHARED_DATA}")
    assert code == 0 and "gb1      present" in out


@pytest.mark.parametrize("flag_at", [0, 1, 2])
def test_plan_takes_the_multirun_flag_as_run_does(work, capsys, flag_at):
    # Issue 28 item 2: `ptransfer plan -m task=synthetic model=onehot` printed a 67-line
    # Hydra/antlr traceback; plan always plans a sweep, so -m (anywhere) changes nothing.
    argv = ["task=synthetic", "model=onehot,esm2_t6_8M_UR50D"]
    expected = main_output(capsys, "plan", *argv)
    argv.insert(flag_at, "-m" if flag_at != 1 else "--multirun")
    got = main_output(capsys, "plan", *argv)
    assert got == expected and got[0] == 0
    assert "2 cells in the design" in got[1] and "Traceback" not in got[1]


def test_plan_refuses_another_option_in_one_line(work, capsys):
    code, out = main_output(capsys, "plan", "--cfg", "job", "task=synthetic")
    assert code == 1 and out.count("\n") == 1 and "unknown option '--cfg'" in out
