"""``ptransfer collect`` is atomic and strict (issue 19 items 6, 7, 8).

- item 6: every table of one collect appears together or not at all: argument errors and
  analysis errors write nothing, and ``kill -9`` at any file-system step leaves the previous
  complete set of tables or the new one (a forked child is killed at each step in turn);
- item 7: only ``done`` cells are merged; the others are listed with the reason;
- item 8: a cell's status records its files' rows, sizes and SHA-256; ``run``'s done check and
  ``collect`` verify them, and parse errors name the file.

Cells are real: the one-hot baseline on tiny CSVs, run in-process through the CLI.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptransfer.analysis import collect as collect_module
from ptransfer.analysis.cell_files import read_status
from ptransfer.analysis.rows import read_results
from ptransfer.cell.status import write_status
from ptransfer.cli import main

AA = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
TABLES = ("results.csv", "summary.csv", "summary.md", "repstat.csv", "intervals.csv",
          "comparisons.csv", "taxonomy.csv", "depth.csv", "collect.json")


def _csv(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    n = 40
    frame = pd.DataFrame({"sequence": ["".join(rng.choice(AA, 12)) for _ in range(n)],
                          "target": rng.normal(size=n),
                          "set": ["train"] * 20 + ["val"] * 10 + ["test"] * 10})
    frame.to_csv(path, index=False)
    return path


def _run(capsys, work: Path, *names: str) -> None:
    paths = ",".join(str(_csv(work / f"{n}.csv", i)) for i, n in enumerate(names))
    code = main(["run", "-m", "task=csv", f"task.path={paths}", "model=onehot",
                 "results_dir=res", "extract.progress=false"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err


def _collect(capsys, *argv: str) -> tuple[int, str]:
    code = main(["collect", "res", "--resamples", "100", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def _cell(work: Path, task: str) -> Path:
    """The task's cell folder, as collect names it (under the DIR it was given: res)."""
    (cell,) = (work / "res" / "cells").glob(f"{task}__*")
    return Path("res") / "cells" / cell.name


def _state(root: Path) -> dict:
    """What a reader of ``root/<table>`` sees: each table's SHA-256 (None: absent), and
    whether collect.json describes exactly these tables (they are one run's)."""
    state = {}
    for name in TABLES:
        path = root / name
        state[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    manifest = root / "collect.json"
    if manifest.exists():
        recorded = json.loads(manifest.read_text())["tables"]
        state["one run"] = all(recorded[n]["sha256"] == state[n] for n in recorded)
        state.pop("collect.json")  # its run id differs between otherwise equal runs
    return state


# -- item 6 --------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["--resamples", "0"], "--resamples 0: needs at least 100"),
    (["--resamples", "-5"], "--resamples -5: needs at least 100"),
    (["--seed", "-1"], "--seed -1: must be a non-negative integer"),
])
def test_argument_errors_are_found_before_anything_is_written(work, capsys, argv, message):
    _run(capsys, work, "alpha")
    assert _collect(capsys)[0] == 0
    before = _state(work / "res")
    runs = sorted(p.name for p in (work / "res" / ".collect").iterdir())
    code = main(["collect", "res", *argv])
    out = capsys.readouterr()
    assert code == 1 and message in out.err and "Traceback" not in out.err
    assert _state(work / "res") == before
    assert sorted(p.name for p in (work / "res" / ".collect").iterdir()) == runs


def test_an_analysis_error_leaves_the_previous_tables(work, capsys):
    _run(capsys, work, "alpha")
    assert _collect(capsys)[0] == 0
    before = _state(work / "res")
    assert before["one run"] and all(before[n] for n in TABLES if n != "collect.json")
    # The same data under a model config the rows do not show (one-hot capped at 8
    # residues): two cells write rows with one key, and analyse refuses them.
    code = main(["run", "task=csv", f"task.path={work / 'alpha.csv'}", "model=onehot",
                 "model.max_len=8", "results_dir=res", "extract.progress=false"])
    assert code == 0
    code, out = _collect(capsys)
    assert code == 1 and "max_len" in out
    assert _state(work / "res") == before


def _fs_steps(monkeypatch, kill_at: int | None, counter: list) -> None:
    """Count every file-system change (and file opened for writing); SIGKILL this process at
    step ``kill_at``."""
    def step():
        counter[0] += 1
        if kill_at is not None and counter[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    for name in ("rename", "replace", "symlink", "link", "unlink", "mkdir", "rmdir", "fsync"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _real=real, **k: (step(), _real(*a, **k))[1])
    real_rmtree, real_open = shutil.rmtree, builtins.open
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: (step(), real_rmtree(*a, **k))[1])

    def opening(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            step()
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", opening)


def _forked_collect(root: Path, kill_at: int | None) -> tuple[int, int]:
    """Run collect in a forked child killed at step ``kill_at``; (signal or 0, steps)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            with pytest.MonkeyPatch.context() as patch:
                counter = [0]
                _fs_steps(patch, kill_at, counter)
                collect_module.collect(root, n_resamples=100)
            os.write(write, str(counter[0]).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    steps = os.read(read, 64).decode()
    os.close(read)
    return (os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0), int(steps or 0)


def test_kill_9_at_any_step_leaves_the_old_or_the_new_tables(work, capsys):
    _run(capsys, work, "alpha", "beta")
    assert _collect(capsys)[0] == 0
    _run(capsys, work, "gamma")  # a new cell: the next collect's tables all differ
    old_root = work / "old"
    shutil.copytree(work / "res", old_root, symlinks=True)
    old = _state(old_root)
    signalled, steps = _forked_collect(work / "res", None)
    assert signalled == 0 and steps > 10
    new = _state(work / "res")
    assert new["one run"] and old["one run"]
    assert new["results.csv"] != old["results.csv"]  # and collect.json's record: a mix shows
    for kill_at in range(1, steps + 1):
        trial = work / f"trial{kill_at}"
        shutil.copytree(old_root, trial, symlinks=True)
        signalled, _ = _forked_collect(trial, kill_at)
        assert signalled == signal.SIGKILL
        seen = _state(trial)
        assert seen in (old, new), f"killed at step {kill_at} of {steps}: {seen}"
        if kill_at % 4 == 0 or kill_at > steps - 8:  # ... and the next collect, from there,
            assert _forked_collect(trial, None)[0] == 0 and _state(trial) == new  # completes,
            # removing what the killed one left unfinished (issue 28 item 10: they piled up)
            assert not list((trial / ".collect").glob("*.tmp")), kill_at
        shutil.rmtree(trial)


def test_unfinished_runs_of_dead_collects_go_and_live_ones_stay(tmp_path):
    # Issue 28 item 10: `.collect/*.tmp` of killed collects piled up (kept for an hour).
    import subprocess
    import sys
    import time

    runs = tmp_path / ".collect"
    runs.mkdir()
    code = ("import sys; from pathlib import Path; from ptransfer.analysis.collect import "
            "new_staging; new_staging(Path(sys.argv[1]), 'dead')")
    subprocess.run([sys.executable, "-c", code, str(runs)], check=True)  # exits: killed
    collect_module.new_staging(runs, "live")  # this process: a collect still at work
    for name, host, age in (("other_young", "elsewhere", 60.0), ("other_old", "elsewhere",
                                                                   7200.0)):
        folder = runs / f"{name}.tmp"
        folder.mkdir()
        (folder / collect_module.OWNER).write_text(json.dumps(
            {"pid": os.getpid(), "host": host, "proc_start": None}))
        os.utime(folder, (time.time() - age,) * 2)
    (runs / "ownerless.tmp").mkdir()  # a killed collect from before owner files
    os.utime(runs / "ownerless.tmp", (time.time() - 7200.0,) * 2)
    collect_module.remove_unfinished(runs)
    assert sorted(p.name for p in runs.iterdir()) == ["live.tmp", "other_young.tmp"]


def test_tables_of_an_older_version_are_replaced_atomically_too(work, capsys):
    _run(capsys, work, "alpha")
    assert _collect(capsys)[0] == 0
    root = work / "res"
    for name in TABLES:  # the plain files an older collect wrote
        data = (root / name).read_bytes()
        (root / name).unlink()
        (root / name).write_bytes(data)
    shutil.rmtree(root / ".collect")
    before = _state(root)
    signalled, steps = _forked_collect(root, None)
    assert signalled == 0 and all((root / n).is_symlink() for n in TABLES)
    assert _state(root) == before  # same cells: the same tables, now switchable


# -- item 7 --------------------------------------------------------------------------------

def test_only_done_cells_are_merged_and_the_rest_are_listed(work, capsys):
    _run(capsys, work, "alpha", "beta")
    beta = _cell(work, "beta")
    status = read_status(beta)  # a forced re-run that failed after its earlier success
    write_status(beta, **{**status, "state": "failed", "error": "OSError: disk on fire"})
    code, out = _collect(capsys)
    assert code == 0
    merged = pd.read_csv(work / "res" / "results.csv")
    assert sorted(merged.task.unique()) == ["alpha"]
    assert f"left out {beta}: status is 'failed': OSError: disk on fire" in out
    assert "from 1 cells (1 cells left out" in out
    manifest = json.loads((work / "res" / "collect.json").read_text())
    assert manifest["left_out"] == [{"cell": str(beta),
                                     "reason": "status is 'failed': OSError: disk on fire"}]


def test_every_cell_left_out_is_listed_with_its_reason(work, capsys):
    # Issue 28 item 11: a failed cell without rows.csv was neither merged nor listed, and
    # with no complete cell the error named only the first cell left out.
    _run(capsys, work, "alpha", "beta", "gamma")
    failed = _cell(work, "gamma")
    (work / failed / "rows.csv").unlink()
    (work / failed / "predictions.parquet").unlink()
    write_status(work / failed, state="failed", error="ValueError: bad luck")
    code, out = _collect(capsys)
    assert code == 0 and f"left out {failed}: status is 'failed': ValueError: bad luck" in out
    assert "from 2 cells (1 cells left out" in out
    for task in ("alpha", "beta"):
        _truncate_at_line(work / _cell(work, task) / "rows.csv")
    code, out = _collect(capsys)
    line = out.strip().splitlines()[-1]
    assert code == 1 and "3 cell(s) left out" in line and "Traceback" not in out
    for task in ("alpha", "beta"):
        assert f"{_cell(work, task)}: rows.csv is " in line
    assert f"{failed}: status is 'failed': ValueError: bad luck" in line


# -- item 8 --------------------------------------------------------------------------------

def _truncate_at_line(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))


def _truncate_in_quote(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: text.index('"{') + 3])  # inside a quoted hparams field


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,name", [
    (_truncate_at_line, "rows.csv"), (_truncate_in_quote, "rows.csv"),
    (_flip_a_byte, "predictions.parquet"),
])
def test_a_damaged_file_makes_the_cell_incomplete_for_run_and_collect(work, capsys, damage,
                                                                     name):
    _run(capsys, work, "alpha", "beta")
    beta = _cell(work, "beta")
    recorded = read_status(beta)["files"]
    assert recorded["rows.csv"]["rows"] == len(pd.read_csv(beta / "rows.csv"))
    assert recorded["predictions.parquet"]["rows"] == len(pd.read_parquet(
        beta / "predictions.parquet"))
    damage(beta / name)
    code, out = _collect(capsys)
    assert code == 0 and f"left out {beta}: {name} " in out, out
    assert sorted(pd.read_csv(work / "res" / "results.csv").task.unique()) == ["alpha"]
    code = main(["run", "task=csv", f"task.path={work / 'beta.csv'}", "model=onehot",
                 "results_dir=res", "extract.progress=false"])
    out = capsys.readouterr().out
    assert code == 0 and "skipped, no work done" not in out  # not complete: redone
    assert read_status(beta)["state"] == "done"
    assert _collect(capsys)[0] == 0
    assert sorted(pd.read_csv(work / "res" / "results.csv").task.unique()) == ["alpha", "beta"]


def test_parse_errors_name_the_file(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('model,hparams\nonehot,"{""alpha"": 1.0\n')  # EOF inside a quoted field
    with pytest.raises(ValueError, match=f"{path}: cannot be read as a ptransfer results table"):
        read_results(path)
