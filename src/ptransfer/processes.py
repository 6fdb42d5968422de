"""Whether a process recorded in a file is still running: one check for every stage.

Claims (``embed.claims``), running cells' statuses and unfinished ``collect`` runs record
their writer as ``pid``, ``host`` and the process start time; a recycled pid then never passes
for the writer. Shared foundation: the analysis stage, which imports no other stage, needs it
as much as the extraction does.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def proc_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), or None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), after "pid (comm)"


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` exists and (when known) started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    return start is None or proc_start(pid) in (None, start)


def this_process() -> dict:
    """``{"pid", "host", "proc_start"}`` of the calling process, as files record it."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "proc_start": proc_start(pid)}


def recorded_alive(owner: dict) -> bool | None:
    """Whether the process ``owner`` (``this_process()``'s fields) records is running: None
    when it ran on another host (no way to tell from here)."""
    if owner.get("host") != socket.gethostname():
        return None
    return process_alive(int(owner["pid"]), owner.get("proc_start"))
