"""Running cells as a grid: skip finished cells, record failures, summarise a sweep.

Every Hydra job (single run or multirun, any launcher) goes through ``run_job``. It skips a
cell whose rows are complete (keyed by config hash), runs it otherwise, and never lets one
failing cell stop the sweep: the error and traceback go to the cell's status.json and to a
``job_status.json`` in the job's Hydra output folder, which ``SweepSummary`` reads at the end
of a multirun to list failures (the CLI then exits non-zero).
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
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from ptransfer.grid.cell import UNAVAILABLE, cell_key, data_fingerprint, is_done, run_cell
from ptransfer.grid.logs import enter_cell, leave_cell
from ptransfer.grid.prepare import prepare_cell
from ptransfer.grid.retention import remove_temporaries, retire_if_unread
from ptransfer.grid.status import (
    INTERRUPTED,
    RUNNING,
    effective_state,
    read_status,
    record_failure,
)
from ptransfer.grid.validate_config import CONF_DIR, check_config

log = logging.getLogger(__name__)

JOB_STATUS = "job_status.json"
FAILED = {"count": 0}  # failures seen by this process (single runs, basic launcher)


def excluded_reason(cfg: DictConfig) -> str | None:
    """Why a swept combination is not a cell of the design (None: it is one).

    A sweep is a cartesian product; the study is not: one-hot has nothing to ablate, the
    pretrained and one-hot arms are deterministic and run once, neither one-hot nor a random
    init depends on the pretraining checkpoint, and a sweep on a machine without weights may
    skip pretrained PLMs.
    """
    rules = cfg.grid
    family = cfg.model.get("family", "")
    deterministic = cfg.ablation.name == "pretrained"
    if family == "onehot" and cfg.ablation.name != "pretrained":
        return "one-hot has no weights to ablate (runs in the pretrained arm only)"
    if str(cfg.checkpoint) != "final" and (family == "onehot" or cfg.ablation.name == "random_init"):
        return f"{family if family == 'onehot' else 'random_init'} does not depend on the " \
               "pretraining checkpoint (runs at checkpoint=final only)"
    if deterministic and int(cfg.seed) != int(rules.deterministic_seed):
        return f"the {cfg.ablation.name} arm runs once, at seed {rules.deterministic_seed}"
    if rules.skip_pretrained_plm and deterministic and family != "onehot":
        return "pretrained PLM skipped (grid.skip_pretrained_plm=true)"
    return None


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
    """One Hydra job = one cell. Returns and records {state, cell_id, ...}."""
    check_config(cfg, CONF_DIR)  # names a mistyped key before the cell id needs it
    key = cell_key(cfg)
    token = enter_cell(key.cell_id)  # log lines of this job name the cell (grid/logs.py)
    out_dir = _job_output_dir()
    log_path = str(out_dir) if out_dir else None
    reason = excluded_reason(cfg) if _in_multirun() else None
    if reason:
        log.info("combination %s is outside the design: %s", key.cell_id, reason)
        status = {"state": "excluded", "cell_id": key.cell_id, "reason": reason}
    elif is_done(key) and not cfg.force:
        log.info("cell %s is complete (config hash %s): skipped, no work done",
                 key.cell_id, key.config_hash)
        status = {"state": "skipped", "cell_id": key.cell_id}
    else:
        log_unfinished(key)
        try:
            key = prepare_cell(cfg, key)  # weights fetched (their content keys the cell)
            frame = run_cell(cfg)
            status = {"state": "done", "cell_id": key.cell_id, "n_rows": len(frame)}
        except Exception as err:  # noqa: BLE001 - a cell's failure must not end the sweep
            cause = root_cause(err)
            status = {"state": "failed", "cell_id": key.cell_id,
                      "error": f"{type(cause).__name__}: {cause}",
                      "traceback": traceback.format_exc(), "log": log_path}
            remove_temporaries(key.dir)
            # No data, no cell: a placeholder key would only leave a folder to mistake for one.
            unrecorded = None if data_fingerprint(cfg).startswith(UNAVAILABLE) else \
                record_failure(key.dir, status)  # a full disk must not fail this
            log.error("cell %s FAILED: %s (log: %s)", key.cell_id, status["error"], log_path)
            if unrecorded:
                log.error("cell %s: its failed status.json could not be written in full "
                          "(%s)", key.cell_id, unrecorded)
            FAILED["count"] += 1
        else:  # display only: the cell is done whatever happens here
            print_cell_summary(frame)
    if status["state"] in ("done", "skipped"):
        retire_if_unread(cfg)  # store.retain=until_done: the last reader deletes the store
    status["rows"] = str(key.dir)
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / JOB_STATUS).write_text(json.dumps(status, indent=2))
        except OSError as err:  # a full disk: the cell's own log line above says it all
            log.error("could not write %s: %s", out_dir / JOB_STATUS, err)
    leave_cell(token)
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


def print_cell_summary(frame) -> None:
    """Main metric per layer on val and every test set: what a user looks at first."""
    main = frame[frame.main_metric]
    if main.empty:
        return
    table = main.pivot_table(index="layer", columns="eval_set", values="value", aggfunc="first")
    metric = main.metric.iloc[0]
    best = main[main.best_layer.astype(bool)].layer
    choice = (f"best on val: layer {int(best.iloc[0])}" if len(best) else
              f"no best layer: every layer's validation {metric} is NaN")
    print(f"\n{frame.task.iloc[0]} | {frame.model.iloc[0]} | {frame.ablation.iloc[0]} | "
          f"seed {frame.seed.iloc[0]} | {metric} per layer ({choice})")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))


def summarise_sweep(sweep_dir: Path) -> dict[str, list[dict]]:
    """Group the job statuses found under a multirun folder by state."""
    groups: dict[str, list[dict]] = {"done": [], "skipped": [], "failed": [], "excluded": []}
    for path in sorted(sweep_dir.rglob(JOB_STATUS)):
        status = json.loads(path.read_text())
        groups.setdefault(status["state"], []).append(status)
    return groups


class SweepSummary(Callback):
    """At the end of a multirun: how many cells ran, were skipped, failed (with errors)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        groups = summarise_sweep(Path(config.hydra.sweep.dir))
        total = sum(len(v) for k, v in groups.items() if k != "excluded")
        print(f"\nsweep: {total} cells: {len(groups['done'])} run, "
              f"{len(groups['skipped'])} skipped (already complete), "
              f"{len(groups['failed'])} failed "
              f"({len(groups['excluded'])} swept combinations outside the design)")
        if not groups["done"] and groups["skipped"] and not groups["failed"]:
            print("nothing to do: every cell of this sweep was already complete")
        for status in groups["failed"]:
            print(f"  FAILED {status['cell_id']}: {status['error']}\n    log: {status['log']}")
        # The sweep's statuses are the record (a job whose status a full disk kept from
        # being written still counted in this process).
        FAILED["count"] = max(FAILED["count"], len(groups["failed"]))
