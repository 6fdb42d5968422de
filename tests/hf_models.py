"""Tiny transformers encoders (ESM-2 ``EsmModel``, ESM C ``EsmcModel``) saved as users get them.

- ``esm2_to_transformers(module)``: a fair-esm ``ESM2`` converted to a transformers
  ``EsmModel`` by mapping its state dict (the mapping of transformers' ESM conversion
  script: ``embed_tokens`` -> ``embeddings.word_embeddings``, ``layers.i.self_attn.*_proj``
  -> ``encoder.layer.i.attention.self.{query,key,value}``, ``out_proj`` ->
  ``attention.output.dense``, ``self_attn_layer_norm`` -> ``attention.LayerNorm``, ``fc1`` /
  ``fc2`` -> ``intermediate.dense`` / ``output.dense``, ``final_layer_norm`` -> ``LayerNorm``,
  ``emb_layer_norm_after`` -> ``encoder.emb_layer_norm_after``; the LM head is dropped);
- ``write_pretrained(module, directory)``: ``save_pretrained`` (config.json + safetensors);
- ``install_in_hf_cache(directory, repo_id, commit)``: the same files as a hub snapshot under
  ``$HF_HOME/hub/models--org--name`` (``snapshots/<commit>/`` + ``refs/main``), the layout
  ``huggingface_hub`` downloads into.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from ptransfer.encoders.hf import hf_n_params
from ptransfer.encoders.hf_weights import repo_cache_dir

TINY_HF_ARCH = {
    "hf_esm2": {
        "model_type": "esm", "vocab_size": 33, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 1026,
        "position_embedding_type": "rotary", "token_dropout": True, "mask_token_id": 32,
        "pad_token_id": 1, "emb_layer_norm_before": False, "layer_norm_eps": 1e-5,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    },
    "esmc": {
        "model_type": "esmc", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 96, "max_position_embeddings": 2048,
        "pad_token_id": 1, "mask_token_id": 32,
    },
}  # fmt: skip
TINY_HF_KWARGS = {"hf_esm2": {"add_pooling_layer": False}, "esmc": {}}
TINY_HF_REPO = {"hf_esm2": "facebook/esm2_t2_tiny_UR50D", "esmc": "biohub/ESMC-tiny"}
HF_FAMILIES = tuple(TINY_HF_ARCH)


def hf_model_config(family: str, **overrides) -> dict:
    """A conf/model-style dict for the tiny transformers ``family`` model."""
    arch = TINY_HF_ARCH[family]
    config = {
        "_target_": "ptransfer.encoders.hf.HfEncoder",
        "name": f"{family}_tiny",
        "family": family,
        "n_blocks": arch["num_hidden_layers"],
        "dim": arch["hidden_size"],
        "n_params": hf_n_params(arch, TINY_HF_KWARGS[family]),
        "max_len": 1022,
        "repo_id": TINY_HF_REPO[family],
        "revision": None,
        "arch": dict(arch),
        "model_kwargs": dict(TINY_HF_KWARGS[family]),
        "attn_implementation": "sdpa",
        "weights": None,
        "checkpoints": {},
    }
    config.update(overrides)
    return config


def build_hf(family: str, seed: int = 0) -> nn.Module:
    """A tiny transformers module with every parameter perturbed ("as if pretrained")."""
    from transformers import AutoModel

    from ptransfer.encoders.hf import hf_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = AutoModel.from_config(hf_config(TINY_HF_ARCH[family]),
                                       **TINY_HF_KWARGS[family])
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return module.eval()


def esm2_to_transformers(module: nn.Module) -> nn.Module:
    """The transformers ``EsmModel`` holding the weights of fair-esm ``ESM2`` ``module``."""
    from transformers import AutoModel

    from ptransfer.encoders.hf import hf_config

    arch = dict(TINY_HF_ARCH["hf_esm2"], hidden_size=module.embed_dim,
                num_hidden_layers=module.num_layers, num_attention_heads=module.attention_heads,
                intermediate_size=4 * module.embed_dim)
    hf = AutoModel.from_config(hf_config(arch), add_pooling_layer=False)
    state = {"embeddings.word_embeddings.weight": module.embed_tokens.weight}
    block = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
             "self_attn.v_proj": "attention.self.value",
             "self_attn.out_proj": "attention.output.dense",
             "self_attn_layer_norm": "attention.LayerNorm", "fc1": "intermediate.dense",
             "fc2": "output.dense", "final_layer_norm": "LayerNorm"}
    for i, layer in enumerate(module.layers):
        for source, target in block.items():
            sub = layer.get_submodule(source)
            for kind in ("weight", "bias"):
                state[f"encoder.layer.{i}.{target}.{kind}"] = getattr(sub, kind)
    for kind in ("weight", "bias"):
        state[f"encoder.emb_layer_norm_after.{kind}"] = getattr(module.emb_layer_norm_after, kind)
        state[f"contact_head.regression.{kind}"] = getattr(module.contact_head.regression, kind)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    learned = [k for k in missing if not k.endswith("inv_freq")]  # rotary buffers: not weights
    assert not learned and not unexpected, (learned, unexpected)
    return hf.eval()


def write_pretrained(module: nn.Module, directory: Path) -> Path:
    """``save_pretrained`` into ``directory``; returns it."""
    module.save_pretrained(str(directory))
    return Path(directory)


def install_in_hf_cache(directory: Path, repo_id: str, commit: str = "0" * 40,
                        ref: str = "main") -> Path:
    """Copy a save_pretrained directory into the hub cache as ``repo_id``'s snapshot."""
    repo = repo_cache_dir(repo_id)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(directory, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot
