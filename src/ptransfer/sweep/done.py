"""Re-running a finished sweep: decide "everything is done" before Hydra launches anything.

A multirun through Hydra composes every job's config twice (the basic sweeper validates the
whole batch, then composes each job again), sets up logging and an output folder per job,
and under ``hydra/launcher=joblib`` starts worker processes that import the whole stack, all
to learn that every cell is complete. ``skip_done_sweep`` expands the same sweep
(``plan.expand_sweep``), composes each combination once, applies the design rules and checks
each cell's key and status exactly as ``run_job`` would; only when every cell of the design
is complete does it print the sweep summary and return True. Anything it does not recognise
(other flags, another sweeper, ``force=true``, an override it cannot expand, a cell not
done) returns False and the sweep runs through Hydra as usual, so the shortcut can only skip
work that ``run_job`` would also skip. It imports no model code (tests/test_done_sweep.py).

Composing is most of what is left (~0.1 s CPU per combination), so a finished sweep is also
remembered: ``results_dir/.done_sweeps/<digest>.json`` lists its cell folders, the digest
covering the overrides, every YAML file of the config search path and the package version.
The next re-run with the same digest re-keys each listed cell from its own ``config.yaml``
(``cell_key``, so a data fingerprint in the key is re-checked) and checks its status; one
mismatch and the full check above runs instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ptransfer import __version__

log = logging.getLogger(__name__)

MULTIRUN_FLAGS = ("-m", "--multirun")
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
TWO_PHASE_SWEEPER = "hydra_plugins.ptransfer_sweeper.two_phase_sweeper.TwoPhaseSweeper"
RECORDS = ".done_sweeps"  # under results_dir


def done_sweep_counts(conf_dir: Path, argv: list[str]) -> tuple[int, int] | None:
    """(done cells, excluded combinations) when ``argv`` is a basic multirun whose every
    design cell is complete; None otherwise (including anything unexpected)."""
    if not any(a in MULTIRUN_FLAGS for a in argv):
        return None
    overrides = [a for a in argv if a not in MULTIRUN_FLAGS]
    if any(a.startswith("-") for a in overrides):
        return None  # --cfg, --info, -c ...: Hydra's business
    from ptransfer.cell.key import cell_key, is_done
    from ptransfer.cell.spec import cell_spec
    from ptransfer.sweep.design import excluded_reason
    from ptransfer.sweep.plan import expand_sweep

    excluded = 0
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        base = compose("config", overrides=[o for o in overrides if "," not in o],
                       return_hydra_config=True)
        if base.hydra.sweeper.get("_target_") not in (BASIC_SWEEPER, TWO_PHASE_SWEEPER) \
                or base.force:
            return None
        record = _record_path(base, conf_dir, overrides)
        remembered = _remembered(record)
        if remembered is not None:
            return remembered
        cells = []
        for combo in expand_sweep(base, overrides):
            cfg = compose("config", overrides=combo)
            if excluded_reason(cfg):
                excluded += 1
                continue
            key = cell_key(cell_spec(cfg))
            if cfg.force or not is_done(key):
                return None
            cells.append(str(key.dir))
    if not cells:
        return None
    try:  # remembering is an optimisation: a read-only results_dir only loses it
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f"{record.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps({"cells": cells, "excluded": excluded}))
        tmp.replace(record)
    except OSError as err:
        log.debug("could not remember the finished sweep in %s: %s", record, err)
    return len(cells), excluded


def _record_path(base, conf_dir: Path, overrides: list[str]) -> Path:
    """``results_dir/.done_sweeps/<digest>.json``; the digest covers what decides the cells."""
    digest = hashlib.sha256(json.dumps([sorted(overrides), __version__]).encode())
    searchpath = [str(conf_dir)] + [p.removeprefix("file://") for p in base.hydra.searchpath
                                    if str(p).startswith("file://")]
    for folder in searchpath:
        for path in sorted(Path(folder).rglob("*.yaml")):
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return Path(base.results_dir) / RECORDS / f"{digest.hexdigest()[:24]}.json"


def _remembered(record: Path) -> tuple[int, int] | None:
    """(done, excluded) when every cell the record lists still keys to its folder and is
    done; None when there is no record or anything changed."""
    from ptransfer.cell.key import CONFIG_FILE, cell_key, is_done
    from ptransfer.cell.spec import cell_spec

    if not record.is_file():
        return None
    try:
        entry = json.loads(record.read_text())
    except (OSError, ValueError):  # a torn record: check the sweep in full
        return None
    for folder in entry["cells"]:
        config = Path(folder) / CONFIG_FILE
        if not config.is_file():
            return None
        key = cell_key(cell_spec(OmegaConf.load(config)))
        if str(key.dir) != folder or not is_done(key):
            return None
    return len(entry["cells"]), int(entry["excluded"])


def skip_done_sweep(conf_dir: Path, argv: list[str]) -> bool:
    """Print the summary and return True when the sweep in ``argv`` has nothing left to do."""
    try:
        counts = done_sweep_counts(conf_dir, argv)
    except Exception as err:  # noqa: BLE001 - any doubt: let Hydra run the sweep as usual
        log.debug("done-sweep pre-check gave up (%s: %s); running the sweep", type(err).__name__, err)
        return False
    if counts is None:
        return False
    done, excluded = counts
    print(f"sweep: {done} cells: 0 run, {done} skipped (already complete), 0 failed "
          f"({excluded} swept combinations outside the design)")
    print("nothing to do: every cell of this sweep was already complete "
          "(checked before launching; force=true recomputes)")
    return True
