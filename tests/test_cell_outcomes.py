"""How a cell ends (issue 19 items 2 and 9): done with a note when no layer can be chosen on
validation; failed (never stuck ``running``, never a traceback) when the disk fills.

Everything runs ``ptransfer.cli.main`` or ``run_job`` in-process on the one-hot baseline and
a tiny CSV, so the cases are fast.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptransfer.cli import main

AA = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def _csv(path: Path, n_val: int = 10, constant_val: bool = False) -> Path:
    rng = np.random.default_rng(0)
    n = 20 + n_val + 10
    frame = pd.DataFrame({
        "sequence": ["".join(rng.choice(AA, 10)) for _ in range(n)],
        "target": rng.normal(size=n),
        "set": ["train"] * 20 + ["val"] * n_val + ["test"] * 10,
    })
    if constant_val:
        frame.loc[frame.set == "val", "target"] = 1.0
    frame.to_csv(path, index=False)
    return path


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["run", "model=onehot", "results_dir=res", "extract.progress=false", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def _status(work: Path) -> dict:
    (status,) = (work / "res" / "cells").glob("*/status.json")
    return json.loads(status.read_text())


def test_no_best_layer_is_a_done_cell_with_a_note(tmp_path, monkeypatch, capsys):
    # (A validation split of one row, the other case here once, is refused since issue 28
    # item 13: tests/test_tasks_user_csv.py.)
    monkeypatch.chdir(tmp_path)
    data = _csv(tmp_path / "t.csv", constant_val=True)
    code, out = _run(capsys, "task=csv", f"task.path={data}")
    assert code == 0, out
    status = _status(tmp_path)
    assert status["state"] == "done", status
    assert "no best layer" in status["note"] and "spearman" in status["note"]
    assert "no best layer" in out and "Traceback" not in out
    (cell,) = (tmp_path / "res" / "cells").iterdir()
    rows = pd.read_csv(cell / "rows.csv")
    assert not rows.best_layer.any() and (cell / "predictions.parquet").is_file()
    code, out = _run(capsys, "task=csv", f"task.path={data}")  # a re-run: complete, skipped
    assert code == 0 and "skipped, no work done" in out and _status(tmp_path)["state"] == "done"


# -- item 9: a full disk fails the cell cleanly ----------------------------------------------

def _disk_full(monkeypatch, cell_root: Path, in_place_ok: bool) -> None:
    """From now on writing under ``cell_root`` fails with ENOSPC, as on a full disk: every
    write (``in_place_ok=False``), or only new files (rewriting a file frees its blocks)."""
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        path = Path(file)
        if any(c in mode for c in "wax+") and cell_root in path.parents and \
                not (in_place_ok and path.exists()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)  # what pathlib's write_text calls


@pytest.mark.parametrize("in_place_ok", [True, False], ids=["rewrite-frees", "nothing-writes"])
def test_a_full_disk_fails_the_cell_without_a_traceback(tmp_path, monkeypatch, in_place_ok):
    from cell_helpers import cell_config

    from ptransfer.cell import fit as fit_module
    from ptransfer.cell.key import cell_key
    from ptransfer.cell.spec import cell_spec
    from ptransfer.cell.status import RUNNING, effective_state, read_status
    from ptransfer.sweep.job import run_job

    cfg = cell_config(tmp_path / "res", "task=synthetic", "model=onehot")

    def extraction_fills_the_disk(*args, **kwargs):
        _disk_full(monkeypatch, tmp_path / "res", in_place_ok)
        raise OSError(errno.ENOSPC, "No space left on device", "store.h5.tmp")

    monkeypatch.setattr(fit_module, "layer_fits", extraction_fills_the_disk)
    status = run_job(cfg)  # must not raise
    assert status["state"] == "failed" and "No space left on device" in status["error"]
    recorded = read_status(cell_key(cell_spec(cfg)).dir)
    assert effective_state(recorded) != RUNNING  # never stuck "running"
    if in_place_ok:
        assert recorded["state"] == "failed" and "No space left" in recorded["error"]
    else:  # nothing could be written: no status (the cell reads as never run, and is redone)
        assert recorded is None


# -- item 16: missing data leaves no placeholder cell -----------------------------------------

def test_missing_data_fails_without_leaving_a_placeholder_cell(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # a fresh clone's empty data/
    code, out = _run(capsys, "task=gb1_two_vs_rest", "data.root=data")
    assert code == 1
    assert "missing data file data/flip_gb1/splits.zip" in out
    assert "ptransfer data download gb1" in out
    assert not (tmp_path / "res" / "cells").exists()  # nothing to mistake for a cell
