"""The Hydra job of every run: one cell (skipped when finished), or one shard of a sweep.

Every Hydra job (single run or multirun, any launcher) goes through ``run_job``. It skips a
cell whose rows are complete (keyed by config hash), runs it otherwise, and never lets one
failing cell stop the sweep: the error and traceback go to the cell's status.json and to a
``job_status.json`` in the job's Hydra output folder, which ``sweep.summary.SweepSummary``
reads at the end of a multirun to list failures (the CLI then exits non-zero).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig

from ptransfer.analysis.cell_files import file_problem
from ptransfer.cell.config_checks import CONF_DIR, check_config
from ptransfer.cell.encoder import wants_gpu
from ptransfer.cell.key import (
    RESULT_FILES,
    UNAVAILABLE,
    CellKey,
    cell_key,
    data_fingerprint,
    is_done,
)
from ptransfer.cell.logs import enter_cell, leave_cell
from ptransfer.cell.run import run_cell
from ptransfer.cell.spec import CellSpec, cell_spec
from ptransfer.cell.status import (
    INTERRUPTED,
    RUNNING,
    effective_state,
    read_status,
    record_failure,
    write_status,
)
from ptransfer.embed.claims import Claim, holder, read_claim
from ptransfer.sweep.design import excluded_reason
from ptransfer.sweep.devices import acquire_device
from ptransfer.sweep.parent import stop_with_parent
from ptransfer.sweep.prepare import prepare_cell
from ptransfer.sweep.retention import remove_temporaries, retire_if_unread
from ptransfer.sweep.summary import FAILED, JOB_STATUS, print_cell_summary

log = logging.getLogger(__name__)

CELL_CLAIM = ".claim"  # in a cell's folder while a process runs it (embed.claims)
CLAIM_POLL_S = 2.0


def _in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _job_output_dir() -> Path | None:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not running under Hydra (tests calling run_job directly)
        return None


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job = one cell, or one shard of a multirun's phase 1 (``extract.shard``).
    Returns and records {state, cell_id, ...} in the job's ``job_status.json``."""
    stop_with_parent()  # a worker of a sweep: stop when the sweep's process dies
    check_config(cfg, CONF_DIR)  # names a mistyped key before the cell id needs it
    if cfg.extract.get("shard"):
        return _record(_shard_job(cfg))
    spec = cell_spec(cfg)
    key = cell_key(spec)
    token = enter_cell(key.cell_id)  # log lines of this job name the cell (cell/logs.py)
    log_path = str(_job_output_dir() or "") or None
    reason = excluded_reason(cfg) if _in_multirun() else None
    if reason:
        log.info("combination %s is outside the design: %s", key.cell_id, reason)
        status = {"state": "excluded", "cell_id": key.cell_id, "reason": reason}
    elif is_done(key) and not cfg.force:
        status = _skipped(key)
    else:
        status = _run_claimed(cfg, spec, key, log_path)
    if status["state"] in ("done", "skipped"):
        retire_if_unread(cfg)  # store.retain=until_done: the last reader deletes the store
    status.setdefault("rows", str(key.dir))  # a re-keyed cell (weights fetched) names its own
    leave_cell(token)
    return _record(status)


def _skipped(key) -> dict[str, Any]:
    log.info("cell %s is complete (config hash %s): skipped, no work done",
             key.cell_id, key.config_hash)
    return {"state": "skipped", "cell_id": key.cell_id}


def _run_claimed(cfg: DictConfig, spec: CellSpec, key: CellKey,
                 log_path: str | None) -> dict[str, Any]:
    """Run the cell holding its claim (another live process running it: wait for that one,
    then skip the cell if it finished) and a device slot (``sweep.devices``)."""
    if data_fingerprint(spec).startswith(UNAVAILABLE):  # fails on the missing data at once:
        with acquire_device(cfg, False, what=key.cell_id) as lease:  # no folder to claim
            return _run_cell_status(cfg, spec, key, lease, log_path)
    key.dir.mkdir(parents=True, exist_ok=True)
    claim = Claim(key.dir / CELL_CLAIM, what=f"running cell {key.cell_id}")
    waited = False
    while not claim.try_acquire():
        if not waited:
            log.info("cell %s is being run by %s: waiting for it", key.cell_id,
                     holder(read_claim(claim.path)))
            waited = True
        time.sleep(CLAIM_POLL_S)
    try:
        if waited and is_done(key) and not cfg.force:
            return _skipped(key)
        log_unfinished(key)
        with acquire_device(cfg, wants_gpu(spec), what=key.cell_id) as lease:
            return _run_cell_status(cfg, spec, key, lease, log_path)
    finally:
        claim.release()


def _run_cell_status(cfg: DictConfig, spec: CellSpec, key: CellKey, lease,
                     log_path: str | None) -> dict[str, Any]:
    previous = read_status(key.dir) if is_done(key) else None  # force=true on a done cell
    try:
        key = prepare_cell(cfg, key)  # weights fetched (their content keys the cell)
        frame = run_cell(cfg, lease)
        status = {"state": "done", "cell_id": key.cell_id, "n_rows": len(frame),
                  **lease.record(), "ended": time.time(), "rows": str(key.dir)}
    except Exception as err:  # noqa: BLE001 - a cell's failure must not end the sweep
        return _failed(spec, key, err, log_path, lease.name, previous)
    print_cell_summary(frame)  # display only: the cell is done whatever happens here
    return status


def _failed(spec: CellSpec, key: CellKey, err: Exception, log_path: str | None,
            device: str, previous: dict | None = None) -> dict[str, Any]:
    """The job's failed status; the cell's own status.json says failed too, unless the cell
    was done before this run (``force=true``) and its rows and predictions are still the
    ones that status records: a done cell whose files are intact is never demoted."""
    cause = root_cause(err)
    status = {"state": "failed", "cell_id": key.cell_id,
              "error": f"{type(cause).__name__}: {cause}",
              "traceback": traceback.format_exc(), "log": log_path, "device": device}
    remove_temporaries(key.dir)
    if previous is not None and file_problem(key.dir, previous, RESULT_FILES) is None:
        write_status(key.dir, **previous)
        FAILED["count"] += 1
        log.error("cell %s: the re-run FAILED (%s); its earlier rows and predictions are "
                  "intact, so it stays done (log: %s)", key.cell_id, status["error"], log_path)
        return {**status, "kept": "earlier results intact: the cell stays done"}
    # No data, no cell: a placeholder key would only leave a folder to mistake for one.
    unrecorded = None if data_fingerprint(spec).startswith(UNAVAILABLE) else \
        record_failure(key.dir, status)  # a full disk must not fail this
    log.error("cell %s FAILED: %s (log: %s)", key.cell_id, status["error"], log_path)
    if unrecorded:
        log.error("cell %s: its failed status.json could not be written in full (%s)",
                  key.cell_id, unrecorded)
    FAILED["count"] += 1
    return status


def _shard_job(cfg: DictConfig) -> dict[str, Any]:
    from ptransfer.sweep.shard_job import PHASE, run_shard_job

    log_path = str(_job_output_dir() or "") or None
    try:
        return {**run_shard_job(cfg), "log": log_path}
    except Exception as err:  # noqa: BLE001 - one shard's failure must not end the sweep
        cause = root_cause(err)
        log.error("shard job %s FAILED: %s (log: %s)", cfg.extract.shard, cause, log_path)
        FAILED["count"] += 1
        return {"phase": PHASE, "state": "failed", "shard": str(cfg.extract.shard),
                "error": f"{type(cause).__name__}: {cause}",
                "traceback": traceback.format_exc(), "log": log_path}


def _record(status: dict[str, Any]) -> dict[str, Any]:
    out_dir = _job_output_dir()
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / JOB_STATUS).write_text(json.dumps(status, indent=2, default=str))
        except OSError as err:  # a full disk: the job's own log line says it all
            log.error("could not write %s: %s", out_dir / JOB_STATUS, err)
    return status


def log_unfinished(key) -> None:
    """Say so when a cell about to run was interrupted, or looks live elsewhere."""
    status = read_status(key.dir)
    state = effective_state(status)
    if state == INTERRUPTED:
        log.warning("cell %s was interrupted (pid %s on %s stopped without finishing): "
                    "redoing it", key.cell_id, status.get("pid"), status.get("host"))
    elif state == RUNNING:
        log.warning("cell %s is running in pid %s on %s (heartbeat %.0f s ago): running it "
                    "here as well", key.cell_id, status.get("pid"), status.get("host"),
                    time.time() - float(status.get("heartbeat", status.get("started", 0))))


def root_cause(err: BaseException) -> BaseException:
    """Hydra wraps errors raised while instantiating a config; report the user's error."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err
