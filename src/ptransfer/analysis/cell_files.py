"""A cell's ``status.json`` as the record of its result files: row counts, sizes, SHA-256.

A cell that finishes writes ``rows.csv`` and ``predictions.parquet`` (each atomically), then
its ``done`` status, which records for each file::

    "files": {"rows.csv": {"rows": 120, "bytes": 31337, "sha256": "..."},
              "predictions.parquet": {"rows": 52400, "bytes": 401122, "sha256": "..."}}

A file truncated, damaged or rewritten after that (a copy cut short at a line boundary, a
disk error, an edit) no longer matches, so ``run``'s done check redoes the cell and
``collect`` leaves it out, saying which file and why. The check reads each file once (SHA-256
at ~1 GB/s) and parses nothing; a status without the record (written before it existed)
cannot be verified and counts as not done.

The grid writes statuses (``cell.status``); this module, below it in the pipeline, reads
them, so ``collect`` and the grid share one reader and one rule.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

STATUS_FILE = "status.json"
DONE = "done"
CHUNK_BYTES = 16 << 20


def read_status(cell_dir: str | Path) -> dict | None:
    """The cell's status, or None when there is none (or it is torn: then the cell is redone)."""
    path = Path(cell_dir) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | Path, n_rows: int) -> dict:
    """``{"rows", "bytes", "sha256"}`` of a result file just written."""
    path = Path(path)
    return {"rows": int(n_rows), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def parquet_rows(path: str | Path) -> int:
    """Rows of a Parquet file, from its footer (nothing else is read)."""
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def file_problem(cell_dir: str | Path, status: dict | None, names: tuple[str, ...]) -> str | None:
    """Why the cell in ``cell_dir`` is not complete (None: it is).

    Complete: ``status`` is ``done`` and records every file of ``names``, and each file is
    there with the recorded size and SHA-256.
    """
    if status is None:
        return f"no readable {STATUS_FILE}"
    if status.get("state") != DONE:
        error = f": {status['error']}" if status.get("error") else ""
        return f"status is {status.get('state')!r}{error}"
    files = status.get("files")
    if not isinstance(files, dict):
        return (f"{STATUS_FILE} records no row counts or checksums (written by an older "
                f"ptransfer): run the cell again")
    for name in names:
        problem = _one_file_problem(Path(cell_dir) / name, files.get(name))
        if problem:
            return problem
    return None


def _one_file_problem(path: Path, record: dict | None) -> str | None:
    if not isinstance(record, dict):
        return f"{STATUS_FILE} has no record of {path.name}"
    if not path.is_file():
        return f"{path.name} is missing"
    size, recorded = path.stat().st_size, record.get("bytes")
    if size != recorded:
        return (f"{path.name} is {size:,} bytes but {STATUS_FILE} recorded {recorded} bytes "
                f"({record.get('rows')} rows): truncated or rewritten after the cell finished")
    if sha256_file(path) != record.get("sha256"):
        return (f"{path.name} differs from the SHA-256 {STATUS_FILE} recorded (same size): "
                f"damaged or edited after the cell finished")
    return None
