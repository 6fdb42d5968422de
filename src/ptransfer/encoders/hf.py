"""Hugging Face ``transformers`` encoders: one class for every protein LM loaded through
``transformers`` (hub ESM-2 and its fine-tunes, ESM C, ProtBert, ProtT5, Ankh, AntiBERTy).

``HfEncoder`` needs three things from its config (conf/model/*.yaml):

- ``arch``: ``model_type`` plus the repository's ``config.json`` fields, enough to build the
  module without weights; the class per model type is in ``encoders.hf_families``
  (``AutoModel``, or ``T5EncoderModel`` for T5 checkpoints);
- where the weights are (``encoders.hf_weights``): ``model.weights`` (a ``save_pretrained``
  folder), an installed package (``model.package``), or the hub snapshot of ``repo_id`` at
  ``revision``;
- the tokenizer and the model card's input convention (``model.tokenizer``,
  ``model.tokens``; ``encoders.hf_tokens``).

One forward with ``output_hidden_states=True`` returns every layer: ``hidden_states[0]`` is
the embedding output (ESM-2: after its token-dropout rescaling, as fair-esm), ``[i]`` block
i, the last one after the final norm where the architecture has one (ESM-2
``emb_layer_norm_after``, ESM C ``norm``, T5 ``final_layer_norm``; BERT is post-LN and has
none). Special tokens (``<cls>``/``<eos>``, ``[CLS]``/``[SEP]``, ``</s>``) and padding are
removed through the tokenizer's own special-tokens mask.

Ablations: ``random_init`` builds the module fresh from ``arch`` under
``torch.manual_seed(seed)`` (the class's own ``_init_weights``: identical to
``AutoModel.from_config`` under that seed) and reads no weights; ``stat_transfer`` permutes
every parameter tensor (``encoders.ablations``). Only ``ablation.scope=full`` exists for these
families: the paper never ablated them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ptransfer.encoders.ablations import RANDOM_INIT, apply_ablation, check_ablation
from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.hf_families import (
    build_module,
    check_model_type,
    model_class,
    module_architecture,
)
from ptransfer.encoders.hf_tokens import (
    InputConvention,
    check_tokenizer_dir,
    encode,
    load_tokenizer,
    residue_alphabet,
    residue_features,
)
from ptransfer.encoders.hf_weights import check_declared_type, model_directory
from ptransfer.encoders.onehot import check_sequences
from ptransfer.encoders.weights import (
    ModuleEncoder,
    WeightsFileError,
    check_architecture,
    resolve_checkpoint,
    warn_if_param_count_differs,
)

log = logging.getLogger(__name__)

SCOPE_KEY = "ablation.scope"


@contextlib.contextmanager
def _quiet_transformers():
    """transformers prints a load report and a progress bar per load; ptransfer checks the
    missing tensors itself and logs one line, so silence both while loading."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


class HfEncoder(ModuleEncoder):
    """Per-layer features of a transformers encoder (see the module docstring).

    Constructor arguments: see ``ModuleEncoder`` (``arch`` = transformers config fields with
    ``model_type``), plus ``repo_id`` (hub repository; None when the weights come from
    elsewhere), ``revision`` (branch, tag or commit; None = main), ``package`` (``{name, path,
    install}``: weights inside an installed Python package), ``model_kwargs`` (extra
    ``from_config``/``from_pretrained`` arguments, e.g. ``add_pooling_layer: false``),
    ``attn_implementation`` (``sdpa`` by default), ``tokenizer`` (``{class, vocab, kwargs}``
    or ``{path}``; empty: the files beside the weights) and ``tokens`` (the input convention).
    """

    def __init__(self, name: str, family: str, n_blocks: int, dim: int, n_params: int,
                 max_len: int | None, arch: Mapping, repo_id: str | None = None,
                 revision: str | None = None, weights: str | None = None,
                 checkpoints: Mapping | None = None, model_kwargs: Mapping | None = None,
                 attn_implementation: str = "sdpa", tokenizer: Mapping | None = None,
                 tokens: Mapping | None = None, package: Mapping | None = None) -> None:
        super().__init__(name, family, n_blocks, dim, n_params, max_len, arch, weights,
                         checkpoints, package)
        check_model_type(arch)
        self.repo_id = repo_id
        self.revision = revision
        self.model_kwargs = model_kwargs
        self.attn_implementation = attn_implementation
        self.tokenizer_spec = tokenizer
        self.convention = InputConvention.from_config(tokens)

    def _kwargs(self) -> dict:
        return {"attn_implementation": self.attn_implementation, **dict(self.model_kwargs or {})}

    def build_module(self) -> nn.Module:
        return build_module(self.arch, self._kwargs())

    def read_module(self, path: Path) -> nn.Module:
        check_declared_type(Path(path), self.arch.get("model_type"))
        try:
            with _quiet_transformers():
                module, info = model_class(self.arch).from_pretrained(
                    str(path), dtype=torch.float32, output_loading_info=True,
                    trust_remote_code=False, **self._kwargs())
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
            raise WeightsFileError(f"{path}: transformers cannot load a model from it: "
                                   f"{error}") from error
        expected = self.arch.get("model_type")
        if module.config.model_type != expected:
            raise WeightsFileError(f"{path}: holds a {module.config.model_type!r} model, the "
                                   f"config says model.arch.model_type={expected!r}")
        missing = [k for k in info.get("missing_keys", ()) if not k.endswith("inv_freq")]
        if missing:  # would stay randomly initialised while the rows say "pretrained"
            raise WeightsFileError(f"{path}: the weights file lacks {len(missing)} tensor(s) of "
                                   f"the {type(module).__name__}, e.g. {sorted(missing)[:3]}")
        unused = sorted(info.get("unexpected_keys", ()))
        if unused:  # masked-LM heads, poolers, T5 decoders: not part of the features
            log.info("%s: %d tensors of %s are not part of %s and were not read (e.g. %s)",
                     self.name, len(unused), path, type(module).__name__, unused[0])
        return module

    def module_architecture(self, module: nn.Module) -> dict[str, int]:
        return module_architecture(module)

    def load(self, checkpoint: CheckpointRef, ablation: str, seed: int,
             scope: str = "full") -> HfEncoder:
        """Build (``random_init``, seeded) or read the module, ablate, switch to eval mode."""
        if scope != "full":
            raise ValueError(f"{SCOPE_KEY}={scope!r} is not defined for model family "
                             f"{self.family!r} (the paper's reference ablations cover only "
                             f"the families it used); use {SCOPE_KEY}=full")
        check_ablation(ablation)
        self.tokenizer_ = self.loaded_tokenizer()
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

    def _source(self, tokenizer_only: bool = False) -> Path:
        """The model's folder: ``model.weights``, its package's, or the hub snapshot (its
        config.json, when there, declares model.arch's model type: the tokenizer reads it too)."""
        directory = model_directory(self.repo_id, self.revision, self.weights,
                                    package=self.package, tokenizer_only=tokenizer_only)
        check_declared_type(directory, self.arch.get("model_type"))
        return directory

    def _read_weights(self, checkpoint: CheckpointRef) -> nn.Module:
        ref = resolve_checkpoint(checkpoint, self.checkpoints)
        if ref.path:
            directory = model_directory(None, None, ref.path,
                                        f"model.checkpoints.{ref.name}.path")
        else:
            directory = self._source()
        log.info("%s: loading checkpoint %s from %s", self.name, ref.name, directory)
        module = self.read_module(directory)
        expected = {"model.n_blocks": self.n_blocks, "model.dim": self.dim}
        check_architecture(directory, expected, self.module_architecture(module))
        return module

    def loaded_tokenizer(self):
        """The tokenizer (built once): from ``model.tokenizer``, else beside the weights."""
        if not hasattr(self, "tokenizer_"):
            self.tokenizer_ = load_tokenizer(
                self.tokenizer_spec, self.convention,
                lambda: check_tokenizer_dir(self._source(tokenizer_only=True),
                                            "the model folder"))
        return self.tokenizer_

    def residue_alphabet(self) -> str:
        """Residue letters the tokenizer encodes (checked before loading any weights)."""
        if not hasattr(self, "alphabet_"):
            self.alphabet_ = residue_alphabet(self.loaded_tokenizer(), self.convention,
                                              self.name)
        return self.alphabet_

    def forward_layers(self, sequences: list[str], layers: Sequence[int]) -> torch.Tensor:
        """len(layers) x B x T x D features; special tokens removed, T = longest sequence."""
        module = self.loaded_module()
        check_sequences(sequences, self.residue_alphabet(), self.max_len, self.name)
        batch = encode(self.tokenizer_, self.convention, sequences, self.name)
        out = module(input_ids=batch.ids.to(self.device),
                     attention_mask=batch.attention_mask.to(self.device),
                     output_hidden_states=True)
        states = out.hidden_states  # n_layers tensors, B x S x D
        if len(states) != self.n_layers:
            raise RuntimeError(f"{self.name}: the model returned {len(states)} hidden states, "
                               f"model.n_blocks + 1 = {self.n_layers}")
        return residue_features(tuple(states[i] for i in layers), batch.positions)
