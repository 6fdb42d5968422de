"""The fine-tune's progress file: written atomically after every epoch, read on a re-run.

One file per fine-tune (``FineTuner(checkpoint=...)``), replaced as a whole: written to a
temporary file beside it, flushed to disk, then renamed over it (``os.replace``), so a kill
at any moment leaves either the previous epoch's file or the new one, never half of one.
It holds the finished learning-rate runs (their history and eval-set outputs, small), and
the run in progress: the trainable weights, the AdamW state, the step count, the
best-validation weights so far and the early-stopping counters. Every epoch's data order and
dropout draws derive from (seed, run, epoch), so a run resumed from epoch ``e`` continues
exactly as the uninterrupted run would have (on the CPU: bit-identical).

When the fine-tune finishes the file is rewritten without any weights (the runs' outputs
only), and a re-run returns those at once. A file from another fine-tune (its ``identity``
differs: spec, seed, model, task) or one that cannot be read is set aside with a warning
and the fine-tune starts over.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FORMAT = 1


def save_progress(path: Path, progress: dict) -> None:
    """Write ``progress`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.partial"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as handle:
            torch.save({"format": FORMAT, **progress}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_progress(path: Path | None, identity: dict) -> dict | None:
    """The progress saved at ``path`` for this ``identity``, else None (start over)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        progress = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file: start over, say why
        log.warning("%s: unreadable fine-tune progress (%s); starting over", path,
                    type(error).__name__)
        return None
    if not isinstance(progress, dict) or progress.get("format") != FORMAT:
        log.warning("%s: not a fine-tune progress file of format %d; starting over", path,
                    FORMAT)
        return None
    if progress.get("identity") != identity:
        log.warning("%s: progress of another fine-tune (different spec, seed, model or "
                    "task); starting over", path)
        return None
    return progress


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies (CPU) of the parameters that train, by name."""
    return {name: p.detach().to("cpu", copy=True)
            for name, p in module.named_parameters() if p.requires_grad}


@torch.no_grad()
def restore_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (from ``trainable_state``) into ``module``'s parameters in place."""
    params = dict(module.named_parameters())
    missing = sorted(set(state) ^ {n for n, p in params.items() if p.requires_grad})
    if missing:
        raise RuntimeError(f"fine-tune state does not match the network: {missing[:3]}")
    for name, value in state.items():
        params[name].copy_(value)
