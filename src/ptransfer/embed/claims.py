"""Claims: "this process is working on X" files. They save work; correctness never needs them.

A claim is a small JSON file created atomically, content included: written under a private
name and hard-linked to the claim's name (``link`` fails when the name exists, atomically on
local filesystems, NFS and Lustre; unlike ``flock``, which a ``nolock`` NFS mount turns into a
no-op), or created with ``O_EXCL`` where links are refused. It names its holder (``pid``, ``host``, the process start time, so a recycled
pid is not mistaken for the holder) and carries a ``heartbeat`` that a daemon thread
refreshes every :data:`HEARTBEAT_S` seconds. A claim is *stale* when its process is gone
(same host) or its heartbeat is older than :data:`STALE_S` (any host: a node that died stops
beating); a stale claim may be broken by anyone.

What claims protect is only ever duplicated work: a shard claimed twice (a broken claim, a
filesystem without ``O_EXCL``) is written twice, and the first publication wins
(``embed.shards.publish``); a GPU slot taken twice runs two jobs on one GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ptransfer.processes import proc_start, process_alive  # noqa: F401 - claims' API

HEARTBEAT_S = 30.0
STALE_S = 10 * HEARTBEAT_S  # several missed beats: a busy machine, not a slow one


def read_claim(path: Path) -> dict | None:
    """The claim's content; None when absent or unreadable (torn: treated as stale)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def is_live(claim: dict | None, now: float | None = None) -> bool:
    """A claim whose holder is running: fresh heartbeat and, on this host, a live process."""
    if not claim:
        return False
    now = time.time() if now is None else now
    if now - float(claim.get("heartbeat", 0.0)) > STALE_S:
        return False
    if claim.get("host") == socket.gethostname():
        return process_alive(int(claim.get("pid", -1)), claim.get("proc_start"))
    return True


def holder(claim: dict | None) -> str:
    """``pid 123 on host`` for log lines."""
    if not claim:
        return "nobody"
    return f"pid {claim.get('pid')} on {claim.get('host')}"


class Claim:
    """One claim file; ``try_acquire`` / ``release``, or ``with Claim(path) as got:``.

    Args:
        path: the claim file (its folder must exist).
        what: a short description written into the file (for people reading it).
        heartbeat_s: seconds between heartbeats while held.
    """

    def __init__(self, path: str | Path, what: str = "", heartbeat_s: float = HEARTBEAT_S):
        self.path = Path(path)
        self.what = what
        self.heartbeat_s = float(heartbeat_s)
        self.token = uuid.uuid4().hex
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> str:
        pid = os.getpid()
        return json.dumps({"what": self.what, "pid": pid, "host": socket.gethostname(),
                           "proc_start": proc_start(pid), "heartbeat": time.time(),
                           "token": self.token})

    def _create(self) -> bool:
        """Create the claim with its content in one step: written under a private name,
        then hard-linked to the claim's name (atomic, fails when the name exists; a reader
        never sees an empty claim). Where links are refused, ``O_EXCL`` creation."""
        tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
        tmp.write_text(self._content())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:
            return self._create_exclusive()
        finally:
            tmp.unlink(missing_ok=True)

    def _create_exclusive(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(self._content())
        return True

    def try_acquire(self) -> bool:
        """Take the claim unless a live holder has it (a stale claim is broken first)."""
        if self.held:
            return True
        if not self._create():
            current = read_claim(self.path)
            if is_live(current) and current.get("token") != self.token:
                return False
            if not self._break(current) or not self._create():
                return False
        self.held = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"claim {self.path.name}")
        self._thread.start()
        return True

    def _break(self, seen: dict | None) -> bool:
        """Remove a stale claim: rename it aside (atomic), check it is the one judged stale,
        put it back otherwise (someone else took the claim in between)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return True  # already gone: try to create
        moved = read_claim(aside)
        if seen is not None and moved is not None and moved.get("token") != seen.get("token"):
            with contextlib.suppress(OSError):
                os.link(aside, self.path)  # a fresh claim was moved: restore it
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            current = read_claim(self.path)
            if not current or current.get("token") != self.token:
                return  # broken by someone who judged us stale: nothing to refresh
            tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
            try:
                tmp.write_text(self._content())
                os.replace(tmp, self.path)
            except OSError:
                tmp.unlink(missing_ok=True)

    def release(self) -> None:
        """Stop the heartbeat and delete the claim if it is still ours."""
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.held = False
        current = read_claim(self.path)
        if current and current.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> bool:
        return self.try_acquire()

    def __exit__(self, *exc) -> None:
        self.release()
