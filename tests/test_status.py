"""A cell's status.json tells a live cell from an interrupted one (issue 12, item 3)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ptransfer.cell import status as st
from ptransfer.cli import main


def _main(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    out = capsys.readouterr()
    return out.out + out.err


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_effective_state_rules(tmp_path):
    now = time.time()
    mine = st.running_status("c", now)
    assert (mine["pid"], mine["host"]) == (os.getpid(), socket.gethostname())
    assert st.effective_state(mine, now) == st.RUNNING
    assert st.effective_state({**mine, "pid": _dead_pid()}, now) == st.INTERRUPTED
    # the pid exists but was started at another time: a recycled pid, not the cell's process
    assert st.effective_state({**mine, "proc_start": "1"}, now) == st.INTERRUPTED
    other = {**mine, "host": "some-other-node", "pid": _dead_pid()}
    assert st.effective_state(other, now) == st.RUNNING  # cannot see its process: trust the beat
    stale = now + st.STALE_S + 1
    assert st.effective_state(other, stale) == st.INTERRUPTED
    assert st.effective_state({**mine, "state": "done"}, stale) == "done"
    assert st.effective_state(None) is None
    # a status written before heartbeats existed: its start time is the last sign of life
    old = {"state": "running", "cell_id": "c", "started": now}
    assert st.effective_state(old, now + 1) == st.RUNNING
    assert st.effective_state(old, stale) == st.INTERRUPTED


def test_heartbeat_refreshes_and_stops_once_the_cell_is_finished(tmp_path):
    started = time.time()
    st.write_status(tmp_path, **st.running_status("c", started))
    first = st.read_status(tmp_path)["heartbeat"]
    thread = st.start_heartbeat(tmp_path, interval=0.05)
    deadline = time.time() + 10
    while st.read_status(tmp_path)["heartbeat"] == first and time.time() < deadline:
        time.sleep(0.02)
    assert st.read_status(tmp_path)["heartbeat"] > first
    st.write_status(tmp_path, state="done", cell_id="c")
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert st.read_status(tmp_path) == {"state": "done", "cell_id": "c"}


def test_a_heartbeat_on_a_full_disk_is_one_log_line_and_beats_again_later(
        tmp_path, monkeypatch, caplog):
    # Issue 28 item 12: the heartbeat thread died on ENOSPC with an OSError traceback.
    import errno
    import threading

    st.write_status(tmp_path, **st.running_status("c", time.time()))
    crashes, calls, real_write = [], [], st._write

    def full_then_free(cell_dir, status):
        calls.append(1)
        if len(calls) <= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(cell_dir / "x.tmp"))
        real_write(cell_dir, status)

    monkeypatch.setattr(st, "_write", full_then_free)
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    first = st.read_status(tmp_path)["heartbeat"]
    with caplog.at_level("WARNING"):
        thread = st.start_heartbeat(tmp_path, interval=0.02)
        deadline = time.time() + 10
        while st.read_status(tmp_path)["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.02)
        assert st.read_status(tmp_path)["heartbeat"] > first  # beating again once it can
        real_write(tmp_path, {"state": "done", "cell_id": "c"})
        thread.join(timeout=5)
    assert not thread.is_alive() and not crashes
    warned = [r.getMessage() for r in caplog.records if r.name == st.__name__]
    assert len(warned) == 1 and "\n" not in warned[0], warned  # once per streak, one line
    assert "heartbeat of" in warned[0] and "No space left on device" in warned[0]


# A real `ptransfer run` whose probe fitting never ends, so it can be killed mid-cell.
_STALLED = """
import sys, time
import ptransfer.cell.fit as cell  # layer_fits is looked up there at call time
cell.layer_fits = lambda *a, **k: time.sleep(3600)
from ptransfer.cli import main
sys.exit(main(["run", "+experiment=smoke", "results_dir=res", "extract.progress=false"]))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and SIGKILL")
def test_cell_killed_with_sigkill_is_reported_interrupted_and_redone(tmp_path, monkeypatch,
                                                                    capsys):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / ".torch")}
    proc = subprocess.Popen([sys.executable, "-c", _STALLED], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    status = None
    while time.time() < deadline and proc.poll() is None:
        files = list(tmp_path.glob("res/cells/*/status.json"))
        if files:
            status = st.read_status(files[0].parent)
            if status and status["state"] == "running":
                break
        time.sleep(0.1)
    assert status and status["state"] == "running", "the cell never started"
    assert status["pid"] == proc.pid and st.effective_state(status) == st.RUNNING
    monkeypatch.chdir(tmp_path)
    out = _main(capsys, "plan", "+experiment=smoke", "results_dir=res")
    assert "running: 1 running now" in out and status["cell_id"] in out
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cell_dir = files[0].parent
    assert json.loads((cell_dir / "status.json").read_text())["state"] == "running"  # left so
    assert st.effective_state(st.read_status(cell_dir)) == st.INTERRUPTED
    out = _main(capsys, "plan", "+experiment=smoke", "results_dir=res")
    assert f"interrupted: 1 interrupted (their process died; a run redoes them): " \
           f"{status['cell_id']}" in out
    assert "done:  0 complete, 1 to run" in out
    out = _main(capsys, "run", "+experiment=smoke", "results_dir=res", "extract.progress=false")
    assert f"cell {status['cell_id']} was interrupted (pid {proc.pid} on " in out
    assert "redoing it" in out
    assert st.read_status(cell_dir)["state"] == "done" and (cell_dir / "rows.csv").is_file()
    out = _main(capsys, "plan", "+experiment=smoke", "results_dir=res")
    assert "interrupted" not in out and "done:  1 complete, 0 to run" in out


def _writers():
    import pandas as pd

    from ptransfer.analysis.predictions import write_predictions
    from ptransfer.analysis.rows import write_rows

    frame = pd.DataFrame({"eval_set": ["test"], "item": ["a"], "value": [1.0]})
    return {"status.json": lambda folder: st.write_status(folder, state="done"),
            "rows.csv": lambda folder: write_rows(frame, folder / "rows.csv"),
            "predictions.parquet": lambda folder: write_predictions([frame], folder /
                                                                    "predictions.parquet")}


@pytest.mark.parametrize("name", ["status.json", "rows.csv", "predictions.parquet"])
def test_a_cell_file_is_written_through_a_temporary_name_of_its_own(tmp_path, name):
    # Another writer of the same cell (a broken claim) is half-way through its own copy,
    # under the temporary name ptransfer 0.2 used for every writer: this write leaves it be.
    theirs = tmp_path / f"{name}.tmp"
    theirs.write_text("another writer's half-written file")
    _writers()[name](tmp_path)
    assert theirs.read_text() == "another writer's half-written file"
    assert (tmp_path / name).stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, theirs.name])
