"""Config values that are wrong whatever their type: unsafe names, missing required keys.

``validate_config`` checks keys and types against the defaults; this module checks what a
well-typed value can still get wrong, each as one :class:`ConfigError` naming the key:

- **names that become paths** (``task.name``, ``model.name``, ``checkpoint``; ``arch.name``
  for ``pretrain``) must be safe identifiers: letters, digits and ``_ . + -``, not starting
  with ``.`` or ``-``. A cell's folder is ``results_dir/cells/<task>__<model>__<checkpoint>...``
  and a store's ``store_dir/<model>/``, so ``task.name=../../x`` would write outside
  ``results_dir`` and ``task.name=proj/x`` one level down, where ``collect`` never pairs the
  cell with its predictions;
- **required values** (``???`` in a config, e.g. ``task.path`` of ``task=csv``) must be given;
- **limits**: ``model.max_len``, when set, is a positive number of residues; the
  extraction's ``toks_per_batch``, ``shard_tokens`` and ``jobs_per_gpu`` are at least 1, and
  ``extract.device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``;
- **the environment**: ``PTRANSFER_FAKE_GPUS``, when set, is a non-negative integer.

Whether this machine has the CUDA device asked for is checked where the job runs
(:func:`resolve_device`): a Slurm sweep is launched from a login node without GPUs.
"""

from __future__ import annotations

import os
import re

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
NAME_KEYS = ("task.name", "model.name", "checkpoint")
PRETRAIN_NAME_KEYS = ("arch.name",)
MAX_NAME = 120  # characters: a cell folder joins several names plus a hash
AT_LEAST_ONE = ("extract.toks_per_batch", "extract.shard_tokens", "extract.jobs_per_gpu")
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
FAKE_GPUS_ENV = "PTRANSFER_FAKE_GPUS"  # a simulated pool of N GPUs (sweep.devices)


class ConfigError(ValueError):
    """A config key with a bad value, or an unknown key. The message names the key."""


def check_safe_name(key: str, value) -> None:
    """Raise unless ``value`` can be one component of a path, as the module docstring says."""
    text = str(value)
    if not SAFE_NAME.fullmatch(text) or len(text) > MAX_NAME:
        hint = ""
        if key == "task.name":
            hint = " (it defaults to the CSV file's stem: set task.name=<a safe name>)"
        raise ConfigError(
            f"config key {key!r}: {text!r} is not a safe name: it becomes part of file and "
            f"folder names, so use only letters, digits and _ . + -, not starting with . or "
            f"-, at most {MAX_NAME} characters{hint}")


def missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every key of ``cfg`` whose value is ``???`` (required, not given), depth first."""
    found = []
    for name in cfg:
        key = f"{prefix}{name}"
        if OmegaConf.is_missing(cfg, name):
            found.append(key)
            continue
        node = cfg._get_node(name)
        if isinstance(node, DictConfig) and not node._is_interpolation():
            found += missing_keys(node, f"{key}.")
    return found


def _value(cfg: DictConfig, key: str):
    """``cfg``'s value at dotted ``key`` (None when absent); a missing required value that
    the key is computed from is named as the error."""
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except (MissingMandatoryValue, InterpolationResolutionError) as err:
        missing = missing_keys(cfg)
        if missing:
            raise ConfigError(_missing_message(missing)) from None
        raise ConfigError(f"config key {key!r}: {err}") from None


def _missing_message(keys: list[str]) -> str:
    example = {"task.path": "task.path=my_task.csv"}.get(keys[0], f"{keys[0]}=...")
    return (f"config key {keys[0]!r} is required and has no value: give it on the command "
            f"line ({example})")


def check_values(cfg: DictConfig, name_keys: tuple[str, ...] = NAME_KEYS) -> None:
    """Raise ``ConfigError`` for the first unsafe name, missing value or bad limit."""
    missing = missing_keys(cfg)
    if missing:
        raise ConfigError(_missing_message(missing))
    for key in name_keys:
        value = _value(cfg, key)
        if value is not None:
            check_safe_name(key, value)
    max_len = OmegaConf.select(cfg, "model.max_len")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int)
                                or max_len < 1):
        raise ConfigError(f"config key 'model.max_len': expected null (no cap) or a "
                               f"positive number of residues, got {max_len!r}")
    check_extract(cfg)
    fake_gpu_count()


def check_extract(cfg: DictConfig) -> None:
    """The extraction settings a sweep plans with: counts at least 1, a device name."""
    for key in AT_LEAST_ONE:
        value = OmegaConf.select(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"config key {key!r}: expected an integer >= 1, got {value!r}")
    device = OmegaConf.select(cfg, "extract.device")
    if device is not None and not DEVICE.fullmatch(str(device)):
        raise ConfigError(f"config key 'extract.device': expected auto, cpu, cuda or cuda:N, "
                          f"got {device!r}")


def fake_gpu_count() -> int | None:
    """The simulated GPU count of ``PTRANSFER_FAKE_GPUS`` (None when unset or empty)."""
    text = os.environ.get(FAKE_GPUS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ConfigError(f"environment variable {FAKE_GPUS_ENV}={text!r}: expected a "
                          "non-negative integer (the number of GPUs to simulate), or unset")
    return int(text)


def resolve_device(name: str) -> str:
    """The torch device of ``extract.device=name`` on this machine: ``auto`` is ``cuda``
    when there is one, else ``cpu``; a CUDA device this machine lacks is a
    :class:`ConfigError` naming the key (not torch's "Torch not compiled with CUDA")."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device (a CPU-only torch, " \
                "or no GPU visible)"
            raise ConfigError(f"config key 'extract.device': {name!r}, but this machine has "
                              f"{have}; use extract.device=auto or cpu")
    return name
