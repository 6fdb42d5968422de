"""Intermediate checkpoints published at a URL (``model.checkpoints.<name>: {url, step}``).

fair-esm published ESM-2 650M's own training checkpoints (facebookresearch/esm issue #453)
as fair-esm-format ``.pt`` files; a model config lists them with their URL and step (see
conf/model/esm2_t33_650M_UR50D_training.yaml). Such an entry needs no ``path``: its file is
the torch hub cache's ``checkpoints/<file name of the URL>`` (where the packages' own weights
live, ``$TORCH_HOME/hub/checkpoints``), downloaded there when online by
``encoders.weights.fetch_checkpoint``; offline (``PTRANSFER_OFFLINE=1``) a missing file is a
``WeightsUnavailable`` naming the file and its URL. ``checkpoint_status`` says, without
fetching anything, which files are present, for ``ptransfer plan``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ptransfer.encoders.weights import checkpoint_path


@dataclass(frozen=True)
class CheckpointStatus:
    """One entry of ``model.checkpoints``: its name, step, file, and whether that file exists."""

    name: str
    step: int | None
    path: Path | None
    url: str | None
    present: bool


def checkpoint_status(checkpoints: Mapping[str, Mapping] | None) -> list[CheckpointStatus]:
    """Every intermediate checkpoint of ``model.checkpoints``, in step order; fetches nothing."""
    rows = []
    for name, entry in (checkpoints or {}).items():
        if name == "final":
            continue
        path = checkpoint_path(entry or {})
        rows.append(CheckpointStatus(name, (entry or {}).get("step"), path,
                                     (entry or {}).get("url"),
                                     bool(path and (path.is_file() or path.is_dir()))))
    return sorted(rows, key=lambda r: (r.step is None, r.step or 0, r.name))
