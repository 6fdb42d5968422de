"""A sweep's worker processes stop when the process that launched the sweep dies.

joblib's loky workers (and ``submitit_local``'s job processes) are children of the
``ptransfer run -m`` process. When that process is killed with SIGKILL, nothing tells them:
they used to go on computing their cell, orphans of pid 1, and a re-run started beside them
then waited on their claims or did their work twice. Now the launching process records itself
in the environment its workers inherit (:func:`sweep_parent`: host and pid), and every
job started in a child of it watches its own parent (:func:`stop_with_parent`): once the
worker's parent is no longer that process (it died; the worker was handed to pid 1), the
worker stops at once, like the parent did. Its running cell then reads ``interrupted`` and a
re-run resumes it; a shard it was writing keeps its committed parts, as after any kill.

Jobs on other hosts (Slurm) and jobs run in the launching process itself (the basic
launcher) are not watched: their parent is not the sweep's process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

PARENT_ENV = "PTRANSFER_SWEEP_PARENT"  # host:pid of the process that launched the sweep
POLL_S = 1.0
_WATCHING: dict[int, threading.Thread] = {}  # one watcher per worker process


@contextlib.contextmanager
def sweep_parent() -> Iterator[None]:
    """While the block runs, this process is recorded as the launcher of the jobs it starts
    (in the environment they inherit); the previous value is restored after."""
    before = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = f"{socket.gethostname()}:{os.getpid()}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = before


def launcher_of_this_worker() -> int | None:
    """The pid of the sweep process that started this worker; None when this process is
    not such a worker (no sweep, another host, the sweep process itself)."""
    host, _, pid_text = os.environ.get(PARENT_ENV, "").partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    return pid if pid != os.getpid() and os.getppid() == pid else None


def stop_with_parent(poll_s: float = POLL_S) -> threading.Thread | None:
    """In a worker of a sweep, start (once) a daemon thread that ends this process as soon
    as the sweep's process is gone; returns it (None where there is nothing to watch)."""
    pid = launcher_of_this_worker()
    if pid is None:
        return None
    if pid in _WATCHING and _WATCHING[pid].is_alive():
        return _WATCHING[pid]

    def watch() -> None:
        while os.getppid() == pid:  # a dead parent's children go to pid 1 (or a subreaper)
            time.sleep(poll_s)
        log.warning("the sweep's process %d is gone: stopping this worker (pid %d); its "
                    "cell reads interrupted and a re-run resumes it", pid, os.getpid())
        logging.shutdown()
        os._exit(1)

    thread = threading.Thread(target=watch, name=f"watch sweep {pid}", daemon=True)
    thread.start()
    _WATCHING[pid] = thread
    return thread
