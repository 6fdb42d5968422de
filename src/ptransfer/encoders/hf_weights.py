"""Where the weights of a Hugging Face ``transformers`` model come from.

First match wins:

1. an intermediate checkpoint's directory (``model.checkpoints.<name>.path``);
2. ``model.weights=/path/dir``: a directory written by ``save_pretrained`` (``config.json``
   plus ``model.safetensors`` or ``pytorch_model.bin``);
3. ``model.package``: a folder inside an installed Python package that ships the weights
   (AntiBERTy's ``antiberty/trained_models/AntiBERTy_md_smooth``), found with
   ``importlib.util.find_spec`` without importing the package; absent, the error says how to
   install it (``model.package.install``);
4. the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``): the snapshot of ``model.repo_id`` at ``model.revision``
   (a branch, tag or commit; ``null`` = ``main``);
5. a download of that snapshot into the cache, unless ``HF_HUB_OFFLINE=1`` or
   ``PTRANSFER_OFFLINE=1``.

Every case ends in a directory that ``AutoModel.from_pretrained`` reads, so a local
``save_pretrained`` directory and a cached hub snapshot load along one code path.

The cache directory and the offline switch are read from the environment at call time
(``huggingface_hub`` reads them once, at import), so a changed ``HF_HOME`` takes effect.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from ptransfer.encoders.hf_families import tensor_model_type
from ptransfer.encoders.weights import (
    OFFLINE_ENV,
    WeightsFileError,
    WeightsUnavailable,
    downloads_allowed,
    package_path,
)
from ptransfer.encoders.weights_location import hf_cache_dir, repo_cache_dir

HF_OFFLINE_ENV = "HF_HUB_OFFLINE"
# What a snapshot needs for an encoder: config, weights and tokenizer files (other formats,
# e.g. TensorFlow or Flax weights, are never fetched). random_init fetches the tokenizer alone.
TOKENIZER_PATTERNS = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                      "added_tokens.json", "vocab.txt", "spiece.model"]
SNAPSHOT_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json",
                     "pytorch_model*.bin", "pytorch_model.bin.index.json", *TOKENIZER_PATTERNS]
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class HfWeightsUnavailable(WeightsUnavailable):
    """A transformers model is neither in the hub cache nor downloadable; says where to put it."""


def hf_offline() -> bool:
    """True when either ``HF_HUB_OFFLINE`` or ``PTRANSFER_OFFLINE`` forbids downloads."""
    hf = os.environ.get(HF_OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
    return hf or not downloads_allowed()


def check_pretrained_dir(directory: Path, key: str) -> Path:
    """``directory`` if it holds ``config.json`` and a weights file, else a clear error."""
    if not directory.is_dir():
        raise HfWeightsUnavailable(f"{key}={directory}: no such directory (expected a "
                                   f"save_pretrained directory with config.json and weights)")
    missing = [] if (directory / "config.json").is_file() else ["config.json"]
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[::2]))
    if missing:
        raise HfWeightsUnavailable(f"{key}={directory}: not a save_pretrained directory "
                                   f"(missing {', '.join(missing)})")
    return directory


def weight_tensor_names(directory: Path) -> list[str]:
    """Tensor names of a save_pretrained folder's weights, read from the safetensors header
    or a shard index (no tensor is loaded); a lone ``pytorch_model.bin`` is memory-mapped."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (directory / index).is_file():
            return sorted(json.loads((directory / index).read_text()).get("weight_map", {}))
    if (directory / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(directory / "model.safetensors"), "pt") as handle:
            return sorted(handle.keys())
    if (directory / "pytorch_model.bin").is_file():
        import torch

        return sorted(torch.load(directory / "pytorch_model.bin", map_location="cpu",
                                 weights_only=True, mmap=True))
    return []


def check_declared_type(directory: Path, expected: str) -> None:
    """Raise ``WeightsFileError`` when ``directory/config.json`` declares another model type
    than ``model.arch.model_type``, naming both and what the weight tensors look like (a BERT
    folder whose config.json says t5 failed inside transformers with a T5Model argument
    error). Unreadable files are left to transformers' own error."""
    try:
        declared = json.loads((directory / "config.json").read_text()).get("model_type")
        looks = tensor_model_type(weight_tensor_names(directory))
    except (OSError, ValueError, RuntimeError):
        return
    if declared == expected:
        return
    tensors = f"; its weight tensors are named as a {looks!r} model's" if looks else ""
    raise WeightsFileError(
        f"{directory}: config.json declares a {declared!r} model but the config chosen says "
        f"model.arch.model_type={expected!r}{tensors}: choose the model config of these files "
        "(or correct config.json's model_type)")


def package_directory(package: Mapping) -> Path:
    """The folder ``package.path`` inside installed package ``package.name`` (not imported)."""
    return package_path(package, "model.weights=/path/dir, a save_pretrained directory",
                        HfWeightsUnavailable)


def model_directory(repo_id: str | None, revision: str | None, local: str | None,
                    key: str = "model.weights", package: Mapping | None = None,
                    tokenizer_only: bool = False) -> Path:
    """The directory to ``from_pretrained``: ``local``, else ``package``'s folder, else the
    cached (or downloaded) hub snapshot; ``tokenizer_only`` fetches no weights.

    Raises ``HfWeightsUnavailable`` naming the repo id, the revision, the cache directory
    and how to place the files when the snapshot is missing and cannot be downloaded.
    """
    if local:
        directory = Path(local).expanduser()
    elif package:
        directory, key = package_directory(package), f"model.package ({package['name']})"
    elif repo_id:
        directory = _hub_snapshot(repo_id, revision, tokenizer_only)
        key = f"hub snapshot of {repo_id}"
    else:
        raise HfWeightsUnavailable(f"{key}: no weights source; set {key}=/path/dir (a "
                                   f"save_pretrained directory) or model.repo_id")
    return directory if tokenizer_only else check_pretrained_dir(directory, key)


def _hub_snapshot(repo_id: str, revision: str | None, tokenizer_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    offline = hf_offline()
    patterns = TOKENIZER_PATTERNS if tokenizer_only else SNAPSHOT_PATTERNS
    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=str(hf_cache_dir()),
                                 allow_patterns=patterns, local_files_only=offline)
    except Exception as error:  # missing in cache, offline, network or auth: one message
        reason = (f"downloads are disabled ({HF_OFFLINE_ENV}=1 or {OFFLINE_ENV}=1)" if offline
                  else f"download failed: {type(error).__name__}: {error}")
        raise HfWeightsUnavailable(missing_message(repo_id, revision, reason)) from error
    return Path(path)


def missing_message(repo_id: str, revision: str | None, reason: str) -> str:
    at = f" at revision {revision!r}" if revision else ""
    pin = f" --revision {revision}" if revision else ""
    return (
        f"weights of Hugging Face model {repo_id!r}{at} are not available: not in the hub "
        f"cache {hf_cache_dir()} (expected {repo_cache_dir(repo_id)}); {reason}. On a machine "
        f"online run `huggingface-cli download {repo_id}{pin}` and copy "
        f"{repo_cache_dir(repo_id).name} into {hf_cache_dir()} (or point HF_HOME at a "
        f"directory whose hub/ holds it), or save the model with save_pretrained and pass "
        f"model.weights=/path/dir"
    )
