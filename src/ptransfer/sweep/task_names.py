"""At sweep start: one task name must mean one task.

Rows, summaries and comparisons group cells by ``task`` (the task's name). Two different task
configs under one name (two ``task=csv`` files with the same stem, ``task.overlap=keep,drop``)
would be read as one task: ``collect`` then refuses two cells of one model, and rows of
different models are silently compared across datasets. ``check_task_names`` finds that
before a sweep launches anything: it composes each distinct choice of the sweep's
task-related overrides (``task``, ``task.*``; a handful of compositions, not one per cell)
and refuses a name that stands for more than one task config (``data.root`` aside, which
does not change the task).
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ptransfer.cell.config_values import ConfigError
from ptransfer.sweep.plan import expand_sweep

_IGNORED = ("root",)  # where the data lives, not what it is (as in the cell key)


def _is_task_override(override: str) -> bool:
    key = override.partition("=")[0].lstrip("+~")
    return key == "task" or key.startswith("task.")


def _task_identity(task) -> dict:
    plain = OmegaConf.to_container(task, resolve=True)
    return {k: v for k, v in plain.items() if k not in _IGNORED}


def _difference(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"task.{k}={a.get(k)} vs {b.get(k)}" for k in keys)


def check_task_names(conf_dir: str | Path, overrides: list[str]) -> int:
    """Raise ConfigError when one ``task.name`` of the sweep names different task configs;
    returns the number of distinct tasks."""
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        base = compose("config", overrides=[o for o in overrides if "," not in o],
                       return_hydra_config=True)
        choices = {tuple(o for o in combo if _is_task_override(o))
                   for combo in expand_sweep(base, overrides)}
        fixed = [o for o in overrides if "," not in o and not _is_task_override(o)]
        tasks: dict[str, dict[str, tuple]] = {}
        for choice in sorted(choices):
            task = compose("config", overrides=[*fixed, *choice]).task
            identity = _task_identity(task)
            blob = json.dumps(identity, sort_keys=True, default=str)
            tasks.setdefault(str(task.name), {}).setdefault(blob, (choice, identity))
    for name, variants in tasks.items():
        if len(variants) > 1:
            (first, a), (second, b) = list(variants.values())[:2]
            raise ConfigError(
                f"task.name {name!r} names {len(variants)} different tasks in this sweep "
                f"({_difference(a, b)}): their cells would be read as one task. Give each its "
                f"own name, e.g. task.name={name}_1 for {' '.join(first) or 'the default'} "
                f"(a task=csv task's name defaults to its file's stem)")
    return sum(len(v) for v in tasks.values())
