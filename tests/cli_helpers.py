"""Run the installed ``ptransfer`` CLI in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The real datasets for the tests that need them (they skip without): $PTRANSFER_TEST_DATA,
# else ../shared/data beside the clone (the development layout).
TEST_DATA_ENV = "PTRANSFER_TEST_DATA"
SHARED_DATA = Path(os.environ.get(TEST_DATA_ENV) or REPO.parent / "shared" / "data")


def needs_data(*files: str):
    """Skip mark of a test that reads the real datasets: it runs when every path of
    ``files`` (relative to :data:`SHARED_DATA`) exists; the reason names the first missing
    path as looked for (``$PTRANSFER_TEST_DATA`` when set) and how to point at a copy."""
    import pytest

    missing = [SHARED_DATA / f for f in files if not (SHARED_DATA / f).exists()]
    origin = (f"${TEST_DATA_ENV}={os.environ[TEST_DATA_ENV]}" if os.environ.get(TEST_DATA_ENV)
              else f"../shared/data beside the clone; set ${TEST_DATA_ENV} to use a copy")
    reason = f"real data absent: {missing[0]} not found ({origin})" if missing else ""
    return pytest.mark.skipif(bool(missing), reason=reason)


def ptransfer(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 600):
    """Run ``python -m ptransfer.cli ARGS`` in ``cwd``; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "TORCH_HOME": str(cwd / ".torch"), "HYDRA_FULL_ERROR": "1"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "ptransfer.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def check(proc) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-4000:]}"
    return out


def main_output(capsys, *argv: str) -> tuple[int, str]:
    """``ptransfer.cli.main(argv)`` in this process: (exit code, stdout + stderr)."""
    from ptransfer.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err
