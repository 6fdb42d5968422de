"""Hugging Face ``transformers`` encoders: hub ESM-2 (``facebook/esm2_*``) and ESM C.

One class, ``HfEncoder``, over ``transformers.AutoModel``: the model config (conf/model/hf_*,
esmc_*) gives ``arch``, the transformers config (``model_type`` plus its fields), enough to
build the module without weights; ``repo_id`` and ``revision`` name the hub snapshot its
weights come from (``encoders.hf_weights``). One forward with ``output_hidden_states=True``
returns every layer: ``hidden_states[0]`` is the embedding output (ESM-2: after its
token-dropout rescaling, as fair-esm), ``hidden_states[i]`` block i.

Final norm, per family (checked in tests/test_hf_encoder.py):

- ``hf_esm2``: the last hidden state is after ``emb_layer_norm_after``, the others are not:
  exactly fair-esm's ESM-2 convention, so the two ESM-2 families give the same features.
- ``esmc``: likewise, the last hidden state is after the final (bias-free) LayerNorm
  ``norm``; the others are the residual stream.

Tokens: ``<cls>`` residues ``<eos>``, right-padded with ``<pad>`` and masked. The residue
vocabulary is fixed per ``model_type`` (``VOCABULARIES``: the ids are baked into the
weights), so no tokenizer files are needed and ``random_init`` needs no download.

Ablations: ``random_init`` builds the module fresh from ``arch`` with ``torch.manual_seed(seed)``
(transformers' own ``_init_weights``: bit-identical to ``AutoModel.from_config`` under that
seed); ``stat_transfer`` permutes every parameter tensor (``encoders.ablations``). Only
``ablation.scope=full`` exists for these families: the paper never ablated them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ptransfer.encoders.ablations import RANDOM_INIT, apply_ablation, check_ablation
from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.hf_weights import model_directory
from ptransfer.encoders.onehot import check_sequences
from ptransfer.encoders.weights import (
    ModuleEncoder,
    WeightsFileError,
    check_architecture,
    count_parameters,
    resolve_checkpoint,
    warn_if_param_count_differs,
)

log = logging.getLogger(__name__)

_RESIDUES = "LAGVSERTIDPKQNFYMHWCXBUZO"
# model_type -> token list (index = id). ESM-2: fair-esm's ESM-1b alphabet, as in the hub
# repos' vocab.txt; ESM C: transformers.models.esmc.tokenization_esmc.SEQUENCE_VOCAB.
VOCABULARIES: dict[str, list[str]] = {
    "esm": ["<cls>", "<pad>", "<eos>", "<unk>", *_RESIDUES, ".", "-", "<null_1>", "<mask>"],
    "esmc": ["<cls>", "<pad>", "<eos>", "<unk>", *_RESIDUES, ".", "-", "|", "<mask>"],
}
SCOPE_KEY = "ablation.scope"


def hf_config(arch: Mapping):
    """The transformers config of ``arch`` (``model_type`` plus that config's fields)."""
    from transformers import AutoConfig

    vocabulary(arch)  # rejects an unknown model_type, naming the key
    fields = dict(arch)
    model_type = fields.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **fields)
    except (TypeError, ValueError) as error:  # unknown field or invalid architecture
        raise ValueError(f"model.arch cannot build a transformers {model_type!r} config: "
                         f"{error}") from error


def vocabulary(arch: Mapping) -> dict[str, int]:
    """Token -> id of ``arch``'s model type."""
    model_type = arch.get("model_type")
    if model_type not in VOCABULARIES:
        raise ValueError(f"model.arch.model_type={model_type!r}: HfEncoder knows "
                         f"{sorted(VOCABULARIES)}")
    return {token: index for index, token in enumerate(VOCABULARIES[model_type])}


def hf_n_params(arch: Mapping, model_kwargs: Mapping | None = None) -> int:
    """Parameter count of the module built from ``arch``, counted on the meta device."""
    from transformers import AutoModel

    with torch.device("meta"):
        module = AutoModel.from_config(hf_config(arch), **dict(model_kwargs or {}))
    return count_parameters(module)


class HfEncoder(ModuleEncoder):
    """Per-layer features of a transformers encoder (see the module docstring).

    Constructor arguments: see ``ModuleEncoder`` (``arch`` = transformers config fields with
    ``model_type``), plus ``repo_id`` (hub repository), ``revision`` (branch, tag or commit;
    None = main), ``model_kwargs`` (extra ``AutoModel`` arguments, e.g. ESM-2's
    ``add_pooling_layer: false``) and ``attn_implementation`` (``sdpa`` by default).
    """

    def __init__(self, name: str, family: str, n_blocks: int, dim: int, n_params: int,
                 max_len: int | None, arch: Mapping, repo_id: str, revision: str | None = None,
                 weights: str | None = None, checkpoints: Mapping | None = None,
                 model_kwargs: Mapping | None = None,
                 attn_implementation: str = "sdpa") -> None:
        super().__init__(name, family, n_blocks, dim, n_params, max_len, arch, weights,
                         checkpoints)
        self.repo_id = repo_id
        self.revision = revision
        self.model_kwargs = model_kwargs
        self.attn_implementation = attn_implementation

    def _kwargs(self) -> dict:
        return {"attn_implementation": self.attn_implementation, **dict(self.model_kwargs or {})}

    def build_module(self) -> nn.Module:
        from transformers import AutoModel

        return AutoModel.from_config(hf_config(self.arch), **self._kwargs())

    def read_module(self, path: Path) -> nn.Module:
        from transformers import AutoModel

        try:
            module = AutoModel.from_pretrained(str(path), dtype=torch.float32, **self._kwargs())
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
            raise WeightsFileError(f"{path}: transformers cannot load a model from it: "
                                   f"{error}") from error
        expected = self.arch.get("model_type")
        if module.config.model_type != expected:
            raise WeightsFileError(f"{path}: holds a {module.config.model_type!r} model, the "
                                   f"config says model.arch.model_type={expected!r}")
        return module

    def module_architecture(self, module: nn.Module) -> dict[str, int]:
        return {"model.n_blocks": module.config.num_hidden_layers,
                "model.dim": module.config.hidden_size}

    def load(self, checkpoint: CheckpointRef, ablation: str, seed: int,
             scope: str = "full") -> HfEncoder:
        """Build (``random_init``, seeded) or read the module, ablate, switch to eval mode."""
        if scope != "full":
            raise ValueError(f"{SCOPE_KEY}={scope!r} is not defined for model family "
                             f"{self.family!r} (the paper's reference ablations cover only "
                             f"the families it used); use {SCOPE_KEY}=full")
        check_ablation(ablation)
        self.vocab_ = vocabulary(self.arch)
        # Building or reading draws from the global RNG: fork it, so callers' streams and
        # hence their results do not depend on which encoder ran before.
        with torch.random.fork_rng(devices=[]):
            if ablation == RANDOM_INIT:
                torch.manual_seed(int(seed))
                module = self.build_module()
                log.info("%s: built from model.arch with seed %d, no weights read",
                         self.name, seed)
            else:
                module = self._read_weights(checkpoint)
        if ablation != RANDOM_INIT:
            module = apply_ablation(module, ablation, int(seed))
        warn_if_param_count_differs(self.name, self.n_params, module)
        self.module_ = module.eval()
        return self

    def _read_weights(self, checkpoint: CheckpointRef) -> nn.Module:
        ref = resolve_checkpoint(checkpoint, self.checkpoints)
        if ref.path:
            directory = model_directory(self.repo_id, None, ref.path,
                                        f"model.checkpoints.{ref.name}.path")
        else:
            directory = model_directory(self.repo_id, self.revision, self.weights)
        log.info("%s: loading checkpoint %s from %s", self.name, ref.name, directory)
        module = self.read_module(directory)
        expected = {"model.n_blocks": self.n_blocks, "model.dim": self.dim}
        check_architecture(directory, expected, self.module_architecture(module))
        return module

    def residue_alphabet(self) -> str:
        """Single-letter residue tokens of the model's vocabulary (checked before loading)."""
        return "".join(t for t in vocabulary(self.arch) if len(t) == 1 and t.isalpha())

    def tokenize(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``<cls>`` residues ``<eos>``, right-padded: ids and attention mask, B x (T + 2)."""
        vocab = self.vocab_
        width = max(len(s) for s in sequences) + 2
        ids = torch.full((len(sequences), width), vocab["<pad>"], dtype=torch.long)
        for row, sequence in enumerate(sequences):
            tokens = [vocab["<cls>"], *(vocab[c] for c in sequence), vocab["<eos>"]]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, (ids != vocab["<pad>"]).long()

    def embed(self, sequences: list[str]) -> torch.Tensor:
        """n_layers x B x T x D float32 features; <cls>/<eos> removed, T = longest sequence."""
        module = self.loaded_module()
        check_sequences(sequences, _RESIDUES, self.max_len, self.name)
        ids, mask = self.tokenize(sequences)
        with torch.inference_mode():
            out = module(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         output_hidden_states=True)
        layers = out.hidden_states  # n_layers tensors, B x (T + 2) x D
        if len(layers) != self.n_layers:
            raise RuntimeError(f"{self.name}: the model returned {len(layers)} hidden states, "
                               f"model.n_blocks + 1 = {self.n_layers}")
        stop = 1 + max(len(s) for s in sequences)
        return torch.stack([h[:, 1:stop] for h in layers]).float()
