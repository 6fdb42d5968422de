"""Which transformers class embeds each architecture, and its config from ``model.arch``.

``model.arch`` holds ``model_type`` plus the fields of the repository's ``config.json``:
enough to build the module without weights (``random_init``) and to count its parameters.

| model_type | class | models | layer L (last) |
|---|---|---|---|
| esm | AutoModel (EsmModel) | hub ESM-2 and its fine-tunes | after ``emb_layer_norm_after`` |
| esmc | AutoModel (EsmcModel) | ESM C | after the final norm |
| bert | AutoModel (BertModel) | ProtBert, AntiBERTy | post-LN blocks: no extra norm |
| t5 | T5EncoderModel | ProtT5-XL-U50 (+ half-precision encoder), Ankh | after ``final_layer_norm`` |

Every class returns ``hidden_states`` = embedding output, then one tensor per block (the last
one after the final norm where the architecture has one). T5 checkpoints hold an encoder and
a decoder; ``T5EncoderModel`` reads the encoder and ignores the rest. No ``trust_remote_code``
model is loaded: a config naming custom code loads its standard ``model_type`` class or fails.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ptransfer.encoders.weights import count_parameters

MODEL_CLASSES = {"esm": "AutoModel", "esmc": "AutoModel", "bert": "AutoModel",
                 "t5": "T5EncoderModel"}
ARCH_KEY = "model.arch.model_type"
# A tensor name part only that model type's checkpoints hold (any prefix: "bert.", "esm.").
TENSOR_MARKS = {"t5": ".SelfAttention.", "esm": "emb_layer_norm_after",
                "bert": "token_type_embeddings", "esmc": "self_attn.q_proj"}


def tensor_model_type(names) -> str | None:
    """The model type whose checkpoints hold tensors named like ``names``, if one does: a
    hint for messages about a folder whose config.json disagrees with its weights."""
    for model_type, mark in TENSOR_MARKS.items():
        if any(mark in name for name in names):
            return model_type
    return None


def check_model_type(arch: Mapping) -> str:
    """``arch``'s model type if an HfEncoder class embeds it, else a clear error."""
    model_type = arch.get("model_type")
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"{ARCH_KEY}={model_type!r}: HfEncoder knows {sorted(MODEL_CLASSES)}")
    return model_type


def model_class(arch: Mapping):
    """The transformers class (``AutoModel`` or ``T5EncoderModel``) for ``arch``."""
    import transformers

    return getattr(transformers, MODEL_CLASSES[check_model_type(arch)])


def hf_config(arch: Mapping):
    """The transformers config of ``arch`` (``model_type`` plus that config's fields)."""
    from transformers import AutoConfig

    fields = dict(arch)
    model_type = check_model_type(fields)
    fields.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **fields)
    except (TypeError, ValueError) as error:  # unknown field or invalid architecture
        raise ValueError(f"model.arch cannot build a transformers {model_type!r} config: "
                         f"{error}") from error


def build_module(arch: Mapping, model_kwargs: Mapping | None = None) -> nn.Module:
    """The module ``arch`` describes, freshly initialised by its class (draws from the RNG)."""
    cls = model_class(arch)
    kwargs = dict(model_kwargs or {})
    if cls.__name__ == "AutoModel":
        return cls.from_config(hf_config(arch), **kwargs)
    return cls._from_config(hf_config(arch), **kwargs)


def hf_n_params(arch: Mapping, model_kwargs: Mapping | None = None) -> int:
    """Parameter count of the module built from ``arch``, counted on the meta device."""
    with torch.device("meta"):
        module = build_module(arch, {k: v for k, v in dict(model_kwargs or {}).items()
                                     if k != "attn_implementation"})
    return count_parameters(module)


def module_architecture(module: nn.Module) -> dict[str, int]:
    """``{"model.n_blocks": ..., "model.dim": ...}`` of a built module (T5 maps its names)."""
    return {"model.n_blocks": module.config.num_hidden_layers,
            "model.dim": module.config.hidden_size}
