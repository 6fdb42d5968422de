"""``ptransfer plan``'s checkpoint listing: every pretraining checkpoint a sweep uses, its
step, its file, and whether that file is present (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf


def _used_checkpoints(combos: list[list[str]]) -> dict[tuple[str, ...], set[str]]:
    """Model overrides of each combination -> the checkpoint names swept with them."""
    used: dict[tuple[str, ...], set[str]] = {}
    for combo in combos:
        model = tuple(o for o in combo if o.split("=")[0].lstrip("+~").startswith("model"))
        names = [o.split("=", 1)[1] for o in combo if o.split("=")[0] == "checkpoint"]
        used.setdefault(model, set()).update(names)
    return used


def checkpoint_lines(conf_dir: Path, overrides: list[str],
                     expand_sweep: Callable[[DictConfig, list[str]], list[list[str]]]) -> list[str]:
    """Lines listing, per model of the sweep with intermediate checkpoints in use, each
    checkpoint (in step order) with its step and file, and how many files are missing.

    ``expand_sweep`` is ``sweep.plan.expand_sweep`` (passed in: plan imports this module)."""
    lines: list[str] = []
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        base = compose("config", overrides=[o for o in overrides if "," not in o],
                       return_hydra_config=True)
        fixed = [o for o in overrides if "," not in o]
        for model, names in _used_checkpoints(expand_sweep(base, overrides)).items():
            cfg = compose("config", overrides=[*fixed, *model])
            node = cfg.model.get("checkpoints")
            known = OmegaConf.to_container(node, resolve=True) if node else {}
            if not set(known) - {"final"}:
                continue  # no intermediate checkpoints: nothing to list (and no torch import)
            from ptransfer.encoders.checkpoint_files import checkpoint_status

            rows = [r for r in checkpoint_status(known) if not names or r.name in names]
            if not rows:
                continue
            missing = [r for r in rows if not r.present]
            final_step = (known.get("final") or {}).get("step")
            lines.append(f"checkpoints of {cfg.model.name}: {len(rows)} intermediate "
                         f"(+ final, step {final_step}); {len(missing)} file(s) missing")
            for r in rows:
                state = "present" if r.present else "MISSING"
                source = f"  <- {r.url}" if r.url and not r.present else ""
                lines.append(f"  {r.name:<12} step {r.step!s:>8}  {state:<7} {r.path}{source}")
    return lines
