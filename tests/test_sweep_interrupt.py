"""Stopping a sweep (issue 28 item 7): Ctrl-C is one line and a re-run resumes; the workers
of a sweep whose process is killed stop with it instead of computing on as orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import main_output

from ptransfer.cell import status as st

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and signals")

_STALLED = """
import sys, time
import ptransfer.cell.fit as cell
cell.layer_fits = lambda *a, **k: time.sleep(3600)
from ptransfer.cli import main
sys.exit(main(["run", "-m", "task=synthetic", "model=onehot", "results_dir=res",
               "extract.progress=false"]))
"""


def _wait_for(predicate, seconds: float = 120.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    return None


def test_ctrl_c_is_one_line_and_a_rerun_resumes(work, capsys):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(work / ".torch")}
    proc = subprocess.Popen([sys.executable, "-c", _STALLED], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def running():
        files = list(work.glob("res/cells/*/status.json"))
        status = st.read_status(files[0].parent) if files else None
        return status if status and status["state"] == "running" else None

    status = _wait_for(running)
    assert status, "the cell never started"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in out and "KeyboardInterrupt" not in out
    assert out.strip().splitlines()[-1] == "ptransfer run: interrupted; re-run resumes"
    code, out = main_output(capsys, "run", "-m", "task=synthetic", "model=onehot",
                            "results_dir=res", "extract.progress=false")
    assert code == 0 and f"cell {status['cell_id']} was interrupted (pid {proc.pid}" in out
    assert st.read_status(next(work.glob("res/cells/*")))["state"] == "done"


_WORKERS = """
import os, sys, time
from pathlib import Path
from joblib import Parallel, delayed
from ptransfer.sweep.parent import sweep_parent

def job(i, folder, tests):
    # A loky worker runs a real cell through run_job, its fit stalled so it computes on.
    sys.path.insert(0, tests)
    import ptransfer.cell.fit as cell
    from cell_helpers import cell_config
    from ptransfer.sweep.job import run_job

    def stalled(*args, **kwargs):
        Path(folder, f"{os.getpid()}.pid").write_text("")
        time.sleep(120)

    cell.layer_fits = stalled
    run_job(cell_config(Path(folder) / f"res{i}", "task=synthetic", "model=onehot"))

def sweep():
    Parallel(n_jobs=2)(delayed(job)(i, sys.argv[1], sys.argv[3]) for i in range(2))

if sys.argv[2] == "marked":  # as `ptransfer run` does around Hydra
    with sweep_parent():
        sweep()
else:
    sweep()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("mode", ["marked", pytest.param("unmarked", marks=pytest.mark.slow)])
def test_workers_stop_when_the_sweep_process_is_killed(tmp_path, mode):
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / ".torch")}
    proc = subprocess.Popen([sys.executable, "-c", _WORKERS, str(tmp_path), mode, tests],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = _wait_for(lambda: [int(p.stem) for p in tmp_path.glob("*.pid")]
                        if len(list(tmp_path.glob("*.pid"))) == 2 else None, 120)
    assert workers, "the workers never started"
    proc.kill()  # SIGKILL: nothing of the parent runs any more
    proc.wait()
    try:
        stopped = _wait_for(lambda: not any(_alive(w) for w in workers), 3.0)
        if mode == "marked":
            assert stopped, "orphaned workers still computing"
        else:  # the control: without the sweep's mark they compute on, orphans of pid 1
            assert not stopped
    finally:
        for pid in workers:  # the workers this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
