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
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra import compose, initialize_config_dir

log = logging.getLogger(__name__)

MULTIRUN_FLAGS = ("-m", "--multirun")
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def done_sweep_counts(conf_dir: Path, argv: list[str]) -> tuple[int, int] | None:
    """(done cells, excluded combinations) when ``argv`` is a basic multirun whose every
    design cell is complete; None otherwise (including anything unexpected)."""
    if not any(a in MULTIRUN_FLAGS for a in argv):
        return None
    overrides = [a for a in argv if a not in MULTIRUN_FLAGS]
    if any(a.startswith("-") for a in overrides):
        return None  # --cfg, --info, -c ...: Hydra's business
    from ptransfer.grid.cell import cell_key, is_done
    from ptransfer.grid.plan import expand_sweep
    from ptransfer.grid.sweep import excluded_reason

    done = excluded = 0
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        base = compose("config", overrides=[o for o in overrides if "," not in o],
                       return_hydra_config=True)
        if base.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return None
        for combo in expand_sweep(base, overrides):
            cfg = compose("config", overrides=combo)
            if excluded_reason(cfg):
                excluded += 1
            elif cfg.force or not is_done(cell_key(cfg)):
                return None
            else:
                done += 1
    return (done, excluded) if done else None


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
