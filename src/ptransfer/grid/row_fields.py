"""What a cell's rows record about its configuration beyond the numbers: where its
checkpoint sits in pretraining, and the settings that decide whether two cells may be
compared (the probe's own configuration, the length policy, the pooled store dtype).

The analysis never reads configs, only rows, so everything a comparison or an alignment
axis needs must be written here (docs/statistics.md, "Units" and "Alignment").
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

FINAL = "final"


def checkpoint_position(cfg: DictConfig, name: str, step) -> dict:
    """``checkpoint_step``, ``checkpoint_fraction`` and ``checkpoint_order`` of checkpoint
    ``name`` of ``cfg.model``.

    Order: the position in ``model.checkpoints`` as listed (``final`` last when it is not
    listed): the configs list checkpoints in pretraining order, so an axis needs no step.
    Fraction: the entry's ``fraction``, 1 for ``final``, else step / final step when both
    are known, else None.
    """
    node = cfg.model.get("checkpoints")
    known = OmegaConf.to_container(node, resolve=True) if node else {}
    names = [n for n in known if n != FINAL] + [FINAL]
    entry = known.get(name) or {}
    step = step if step is not None else entry.get("step")
    final_step = (known.get(FINAL) or {}).get("step")
    fraction = entry.get("fraction")
    if fraction is None and name == FINAL:
        fraction = 1.0
    elif fraction is None and step is not None and final_step:
        fraction = float(step) / float(final_step)
    return {"checkpoint_step": step, "checkpoint_fraction": fraction,
            "checkpoint_order": names.index(name) if name in names else None}


def head_config_hash(head_cfg: DictConfig, head: str) -> str:
    """SHA-256 prefix of the chosen probe's own configuration (``head.<head>``: estimator
    and its grid, learning rate, ...). ``head=auto`` and ``head=<name>`` give the same hash
    when they pick the same probe with the same parameters."""
    from ptransfer.heads.fit_layers import probe_config

    blob = json.dumps(probe_config(head_cfg, head), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def config_fields(cfg: DictConfig, name: str, step, head: str) -> dict:
    """The rows' configuration columns of a cell (see module docstring)."""
    return {**checkpoint_position(cfg, name, step),
            "length_policy": cfg.extract.length_policy,
            "pooled_dtype": cfg.extract.get("pooled_dtype", "float32"),
            "head_config": head_config_hash(cfg.head, head)}
