"""``ptransfer collect DIR``: merge the complete cells' rows, analyse, publish every table at once.

1. **Check the arguments** (``DIR`` a writable folder, ``--resamples``, ``--seed``) before
   anything is read or written.
2. **Merge complete cells only.** Every ``rows.csv`` under ``DIR`` belongs to a cell folder;
   a cell is merged when its ``status.json`` says ``done`` and its rows and predictions match
   the row counts, sizes and SHA-256 that status recorded (``cell_files``). Every other cell
   (failed, running, interrupted, damaged, or written before the record existed) is left out
   and listed with the reason.
3. **Analyse** (``summary.analyse``: intervals, comparisons, taxonomy, depth): any error
   here (two configs under one task name, ...) stops the command before a table is written.
   The depth summary line (``depth.depth_line``) is returned and printed.
4. **Publish atomically.** The tables are written into a new run folder
   ``DIR/.collect/<run id>/`` with a manifest ``collect.json`` (run id, arguments, cells
   merged and left out, each table's rows and SHA-256). ``DIR/<table>`` (``results.csv``,
   ``summary.csv``, ...) are symbolic links to ``.collect/current/<table>``, and
   ``.collect/current`` is a link to the run folder, replaced by one ``rename``. So a reader
   of ``DIR/results.csv``, ``DIR/summary.csv``, ... sees the previous collect's complete set
   of tables or this one's, never a mix, whenever the command is killed (``kill -9``
   included); a killed collect leaves at most an unfinished ``*.tmp`` folder, which records
   its writer (``owner.json``: pid, host, process start) and is removed by the next collect
   once that process is gone (another host's: after :data:`STALE_TMP_S`); a live collect's is
   never touched. An error or Ctrl-C removes the collect's own folder at once. Tables of an older ptransfer (plain files) are first moved under ``.collect``
   without changing what they read.

Needs a filesystem with symbolic links (every Linux filesystem, NFS and Lustre included).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ptransfer import __version__
from ptransfer.analysis.cell_files import STATUS_FILE, file_problem, read_status, sha256_file
from ptransfer.analysis.predictions import PREDICTIONS_FILE
from ptransfer.analysis.rows import RESULTS_FILE, ROWS_FILE, read_results, write_rows
from ptransfer.processes import recorded_alive, this_process

log = logging.getLogger(__name__)

RUNS_DIR = ".collect"
CURRENT = "current"
MANIFEST = "collect.json"
MIN_RESAMPLES = 100  # the 2.5 % tail of fewer resamples rests on fewer than 3 of them
STALE_TMP_S = 3600.0  # an unfinished run folder of another host older than this: stale
OWNER = "owner.json"  # in an unfinished run folder: the collect process writing it


@dataclass
class Collected:
    """What one ``collect`` merged, left out and wrote."""

    run_id: str
    merged: pd.DataFrame
    cells: list[str]
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (cell folder, reason)
    tables: list[Path] = field(default_factory=list)  # DIR/<name> of every table written
    depth_line: str = ""  # where the best and the shallowest as-good layers sit (depth)


def check_arguments(root: Path, n_resamples: int, seed: int) -> None:
    """Raise ValueError naming the argument that cannot work; nothing is written."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (collect reads the cells under it)")
    if n_resamples < MIN_RESAMPLES:
        raise ValueError(f"--resamples {n_resamples}: needs at least {MIN_RESAMPLES} bootstrap "
                         "resamples for a 95 % interval (default 1000)")
    if seed < 0:
        raise ValueError(f"--seed {seed}: must be a non-negative integer")
    runs = root / RUNS_DIR
    try:
        runs.mkdir(exist_ok=True)
        probe = runs / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{root}: cannot write the collected tables there "
                         f"({err.strerror or err})") from None


def cell_folders(root: Path) -> list[Path]:
    """Every cell folder under ``root``: a folder holding a ``rows.csv`` or a
    ``status.json`` (a failed cell has only the latter), outside ``.collect``."""
    found = {p.parent for name in (ROWS_FILE, STATUS_FILE) for p in root.rglob(name)
             if p.is_file()}
    return sorted(c for c in found if RUNS_DIR not in c.relative_to(root).parts)


def merge_cells(root: Path) -> tuple[pd.DataFrame, list[str], list[tuple[str, str]]]:
    """(merged rows of the complete cells, their folders, [(folder, reason)] of every other
    cell folder)."""
    frames, cells, left_out = [], [], []
    for cell in cell_folders(root):
        problem = file_problem(cell, read_status(cell), (ROWS_FILE, PREDICTIONS_FILE))
        if problem:
            left_out.append((str(cell), problem))
            continue
        frames.append(read_results(cell / ROWS_FILE))
        cells.append(str(cell))
    if not frames:
        every = "; ".join(f"{c}: {r}" for c, r in left_out)
        detail = f"; {len(left_out)} cell(s) left out: {every}" if left_out else ""
        raise FileNotFoundError(f"no complete cell (a {ROWS_FILE} with a done {STATUS_FILE}) "
                                f"under {root}: run `ptransfer run` first{detail}")
    return pd.concat(frames, ignore_index=True), cells, left_out


def collect(root: str | Path, n_resamples: int = 1000, seed: int = 0,
            margins: dict | None = None) -> Collected:
    """Merge, analyse and publish (module docstring); returns what was done.

    ``margins``: metric -> smallest effect of interest (``margins.DEFAULT_MARGINS``)."""
    from ptransfer.analysis.summary import analyse

    root = Path(root)
    check_arguments(root, n_resamples, seed)
    runs = root / RUNS_DIR
    remove_unfinished(runs)
    merged, cells, left_out = merge_cells(root)
    analysis = analyse(merged, root, n_resamples=n_resamples, seed=seed, margins=margins)
    run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{uuid.uuid4().hex[:8]}"
    manifest = {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "ptransfer_version": __version__, "resamples": n_resamples, "seed": seed,
                "margins": margins,
                "cells": cells, "left_out": [{"cell": c, "reason": r} for c, r in left_out]}
    staging = new_staging(runs, run_id)
    try:
        names = _stage_tables(staging, root, merged, analysis, manifest)
        publish(root, staging, run_id, names)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # an error or Ctrl-C: nothing left behind
        raise
    (runs / run_id / OWNER).unlink(missing_ok=True)  # published: no longer anyone's work
    log.info("collected %d rows of %d cells into %s (run %s)", len(merged), len(cells), root,
             run_id)
    log.info("%s", analysis.depth_line)
    return Collected(run_id, merged, cells, left_out, [root / n for n in names],
                     analysis.depth_line)


def new_staging(runs: Path, run_id: str) -> Path:
    """The unfinished run folder ``runs/<run_id>.tmp``, naming this process as its writer."""
    staging = runs / f"{run_id}.tmp"
    staging.mkdir()
    (staging / OWNER).write_text(json.dumps(this_process()))
    return staging


def _stage_tables(staging: Path, root: Path, merged: pd.DataFrame, analysis,
                  manifest: dict) -> list[str]:
    """Write every table and ``manifest`` (plus the tables' records) into ``staging``;
    returns the names to publish."""
    from ptransfer.analysis.summary import write_tables

    write_rows(merged, staging / RESULTS_FILE)
    written = [staging / RESULTS_FILE, *write_tables(merged, staging, predictions_root=root,
                                                     analysis=analysis)]
    tables = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in written}
    tables[RESULTS_FILE]["rows"] = len(merged)
    (staging / MANIFEST).write_text(json.dumps({**manifest, "tables": tables}, indent=1))
    _sync(staging)
    return [p.name for p in written] + [MANIFEST]


def _sync(folder: Path) -> None:
    """fsync every file and the folder: a crash after the switch never shows empty tables."""
    for path in [*folder.iterdir(), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(root: Path, staging: Path, run_id: str, names: list[str]) -> None:
    """Make the tables of ``staging`` what ``root/<name>`` reads, all at once."""
    runs = root / RUNS_DIR
    final = runs / run_id
    os.rename(staging, final)
    _adopt_plain_tables(root, runs, names)
    for name in names:  # before the switch: a new name dangles until then, an old one reads old
        _link(root / name, Path(RUNS_DIR) / CURRENT / name)
    _link(runs / CURRENT, Path(run_id))  # the switch: one rename
    for link in root.iterdir():  # tables the new run does not have: no dangling names
        if link.is_symlink() and link.name not in names and \
                os.readlink(link) == str(Path(RUNS_DIR) / CURRENT / link.name):
            link.unlink()
    for old in runs.iterdir():  # earlier runs (one collect per folder at a time)
        if old.is_dir() and not old.is_symlink() and old.name != run_id \
                and not old.name.endswith(".tmp"):
            shutil.rmtree(old, ignore_errors=True)


def _link(path: Path, target: Path) -> None:
    """Point symlink ``path`` at ``target``, atomically (a new link renamed over the old)."""
    if path.is_symlink() and os.readlink(path) == str(target):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _adopt_plain_tables(root: Path, runs: Path, names: list[str]) -> None:
    """Tables written as plain files (an older ptransfer) become the current run, unchanged
    for readers: each is hard-linked into a run folder, then replaced by a link to it."""
    if (runs / CURRENT).is_symlink():
        return
    plain = [root / n for n in names if (root / n).is_file() and not (root / n).is_symlink()]
    if not plain:
        return
    adopted = runs / "adopted"
    adopted.mkdir(exist_ok=True)
    for path in plain:
        if not (adopted / path.name).exists():
            os.link(path, adopted / path.name)
    _link(runs / CURRENT, Path(adopted.name))
    for path in plain:
        _link(path, Path(RUNS_DIR) / CURRENT / path.name)


def remove_unfinished(runs: Path) -> None:
    """Delete the run folders killed collects left unfinished (``*.tmp``): those whose
    writer (``owner.json``) is gone from this host, or, of another host or without a readable
    owner, untouched for :data:`STALE_TMP_S`. A live collect's folder stays."""
    now = time.time()
    for path in runs.glob("*.tmp"):
        try:
            owner = json.loads((path / OWNER).read_text())
        except (OSError, ValueError):
            owner = None
        try:
            alive = recorded_alive(owner) if isinstance(owner, dict) else None
            if alive is False or (alive is None and now - path.stat().st_mtime > STALE_TMP_S):
                shutil.rmtree(path, ignore_errors=True)
        except (OSError, KeyError, ValueError):
            continue
    for link in [*runs.glob(".*.link"), *runs.parent.glob(".*.link")]:
        link.unlink(missing_ok=True)  # a link made, not yet renamed, by a killed collect
