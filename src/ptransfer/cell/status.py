"""A cell's ``status.json``: atomic writes, who runs it, and live vs interrupted.

A running cell records ``pid``, ``host``, ``proc_start`` (the process's start time, so a
recycled pid is not mistaken for the cell's process) and a ``heartbeat`` timestamp that a
daemon thread refreshes every :data:`HEARTBEAT_S` seconds while the cell works. A process
killed with SIGKILL (or a machine that died) leaves ``state: running`` behind;
:func:`effective_state` reads such a status as ``interrupted`` when

- it was written on this host and its process is gone (or the pid now belongs to a process
  started at another time), or
- its heartbeat is older than :data:`STALE_S` (any host: a cell on a cluster node that
  died stops beating).

Interrupted cells are redone by the next run, exactly like cells that never ran.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

# One reader of status files for the grid and collect; a torn file reads as None (redone).
from ptransfer.analysis.cell_files import STATUS_FILE, read_status
from ptransfer.embed.claims import proc_start, process_alive

log = logging.getLogger(__name__)

HEARTBEAT_S = 60.0
STALE_S = 10 * HEARTBEAT_S  # several missed beats: a busy machine, not a slow one
RUNNING, INTERRUPTED = "running", "interrupted"
# One lock for every status write of this process: the heartbeat thread reads, checks and
# rewrites under it, so it can never overwrite the final done/failed status with "running".
_LOCK = threading.Lock()


def _write(cell_dir: Path, status: dict) -> None:
    cell_dir.mkdir(parents=True, exist_ok=True)
    # A private temporary name: two writers of one cell (a broken claim) never share one.
    tmp = cell_dir / f"{STATUS_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(json.dumps(status, indent=2, default=str))
    tmp.replace(cell_dir / STATUS_FILE)


def write_status(cell_dir: Path, **status) -> None:
    """Write ``status.json`` atomically (a reader sees the old or the new file)."""
    with _LOCK:
        _write(Path(cell_dir), status)


def record_failure(cell_dir: Path, status: dict) -> str | None:
    """Write a ``failed`` status even on a full disk; returns why the full one could not be.

    The failure being recorded is often the disk filling up, and then writing the status
    (a new temporary file, renamed) fails too. In turn: the full status; the status without
    its traceback, rewritten in place (truncating the old file frees its blocks); and, when
    nothing can be written, the ``running`` status is deleted, so the cell reads as never
    run (and is redone) rather than running, and the heartbeat thread stops.
    """
    cell_dir = Path(cell_dir)
    try:
        write_status(cell_dir, **status)
        return None
    except OSError as err:
        reason = f"{type(err).__name__}: {err}"
    compact = {k: v for k, v in status.items() if k != "traceback"}
    with _LOCK:
        try:
            (cell_dir / STATUS_FILE).write_text(json.dumps(compact, default=str))
            return reason
        except OSError:
            pass
        try:
            (cell_dir / STATUS_FILE).unlink(missing_ok=True)
        except OSError:  # nothing more to do: a dead pid reads interrupted later
            pass
    return reason


def running_status(cell_id: str, started: float) -> dict:
    """The ``running`` status of a cell run by this process."""
    pid = os.getpid()
    return {"state": RUNNING, "cell_id": cell_id, "started": started, "pid": pid,
            "host": socket.gethostname(), "proc_start": proc_start(pid),
            "heartbeat": time.time()}


def effective_state(status: dict | None, now: float | None = None) -> str | None:
    """``status["state"]``, except that a dead ``running`` cell reads ``interrupted``."""
    if not status or status.get("state") != RUNNING:
        return status.get("state") if status else None
    now = time.time() if now is None else now
    beat = status.get("heartbeat", status.get("started"))
    if beat is not None and now - float(beat) > STALE_S:
        return INTERRUPTED
    pid = status.get("pid")
    if pid is not None and status.get("host") == socket.gethostname():
        if not process_alive(int(pid), status.get("proc_start")):
            return INTERRUPTED
    return RUNNING


def start_heartbeat(cell_dir: Path, interval: float = HEARTBEAT_S) -> threading.Thread:
    """Refresh the ``heartbeat`` of this process's running status every ``interval`` s.

    The thread ends by itself once the status is no longer this process's ``running``
    (the cell wrote done, or the sweep wrote failed), so callers need no stop call. A beat
    that cannot be written (a full disk: the cell itself fails on it and says so) is one
    warning line per run of failures, and the next beat tries again.
    """
    cell_dir, pid = Path(cell_dir), os.getpid()

    def beat() -> None:
        failing = False
        while True:
            time.sleep(interval)
            with _LOCK:
                status = read_status(cell_dir)
                if not status or status.get("state") != RUNNING or status.get("pid") != pid:
                    return
                try:
                    _write(cell_dir, {**status, "heartbeat": time.time()})
                    failing = False
                except OSError as err:
                    if not failing:
                        log.warning("heartbeat of %s not written: %s: %s", cell_dir.name,
                                    err.strerror or err, err.filename or cell_dir)
                    failing = True

    thread = threading.Thread(target=beat, name=f"heartbeat {cell_dir.name}", daemon=True)
    thread.start()
    return thread
