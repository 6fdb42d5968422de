"""Log lines that name their cell: a context variable set per job, read by a logging filter.

Under ``hydra/launcher=joblib`` several cells log to one console at once, so every record
logged while a cell runs carries the cell id: ``CellFilter`` (attached to the handlers by
``conf/hydra/job_logging/ptransfer.yaml``) sets ``record.cell`` to ``"[<cell_id>]"``, or to
``""`` outside a cell, and the format places ``%(cell)s`` after the time.
"""

from __future__ import annotations

import contextvars
import logging

_CELL: contextvars.ContextVar[str | None] = contextvars.ContextVar("ptransfer_cell", default=None)


def enter_cell(cell_id: str) -> contextvars.Token:
    """Mark the records logged from now on as ``cell_id``'s; pass the token to ``leave_cell``."""
    return _CELL.set(cell_id)


def leave_cell(token: contextvars.Token) -> None:
    _CELL.reset(token)


def current_cell() -> str | None:
    return _CELL.get()


class CellFilter(logging.Filter):
    """Adds ``record.cell`` ("[<cell_id>]" inside a cell, else ""); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        cell = _CELL.get()
        record.cell = f"[{cell}]" if cell else ""
        return True
