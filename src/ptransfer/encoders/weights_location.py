"""Where weights live on disk, known without importing torch or the model packages.

The cell key includes the content fingerprint of the weights a cell reads
(``encoders.weights_fingerprint``), and a re-run of a finished sweep keys its cells without
importing torch; so the caches' locations are computed here from the environment, exactly
as the packages compute them:

- the torch hub cache, ``torch.hub.get_dir()``: ``$TORCH_HOME/hub``, else
  ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub`` (torch's own ``get_dir`` is
  used when torch is already imported, so ``torch.hub.set_dir`` is honoured too);
- the Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``$XDG_CACHE_HOME/huggingface/hub`` (read at call time: ``huggingface_hub`` reads it
  once, at import, so a changed ``HF_HOME`` would otherwise be missed).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()``, without importing torch."""
    if "torch" in sys.modules:  # honours torch.hub.set_dir
        return Path(sys.modules["torch"].hub.get_dir())
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"),
                                                    "torch")
    return Path(os.path.expanduser(home)) / "hub"


def hub_checkpoints_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: where the packages' hub loaders keep weights."""
    return torch_hub_dir() / "checkpoints"


def checkpoint_path(entry: Mapping) -> Path | None:
    """The file of a checkpoint entry: its ``path``, else the hub cache file of its ``url``."""
    if entry.get("path"):
        return Path(str(entry["path"])).expanduser()
    if entry.get("url"):
        return hub_checkpoints_dir() / Path(urlparse(str(entry["url"])).path).name
    return None


def hf_cache_dir() -> Path:
    """The hub cache ``huggingface_hub`` uses under the current environment."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def repo_cache_dir(repo_id: str) -> Path:
    """``<cache>/models--<org>--<name>``: the folder a hub snapshot of ``repo_id`` lives in."""
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(repo_id: str, revision: str | None) -> tuple[str, Path] | None:
    """(commit, snapshot folder) of ``repo_id`` at ``revision`` in the hub cache, or None.

    A branch or tag resolves through ``refs/<name>`` (what ``snapshot_download`` wrote when
    it fetched it); a full commit hash names its snapshot folder directly. Nothing is fetched.
    """
    repo = repo_cache_dir(repo_id)
    name = revision or "main"
    ref = repo / "refs" / name
    try:
        commit = ref.read_text().strip() if ref.is_file() else name
    except OSError:
        return None
    snapshot = repo / "snapshots" / commit
    return (commit, snapshot) if snapshot.is_dir() else None


def package_folder(package: Mapping) -> Path | None:
    """The folder ``package.path`` inside the installed Python package ``package.name`` (found
    with ``importlib.util.find_spec``, never imported), or None when it is not installed."""
    spec = importlib.util.find_spec(str(package["name"]))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / str(package.get("path") or "")
