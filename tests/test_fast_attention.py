"""Fused ESM-2 attention gives fair-esm's features, and falls back where it must."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from tiny_models import model_config

from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.fast_attention import fuse_attention

SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIK", "WY", "MKTAYIAKQRQLL"]


def _encoder(fast: bool):
    enc = instantiate(model_config("esm2"), fast_attention=fast, _convert_="all")
    return enc.load(CheckpointRef(), ablation="random_init", seed=1)


def test_fused_features_equal_fair_esm_forward_with_padding():
    fused, plain = _encoder(True), _encoder(False)
    a, b = fused.embed(SEQS), plain.embed(SEQS)  # n_layers x B x T x D, with padding
    for i, seq in enumerate(SEQS):
        torch.testing.assert_close(a[:, i, : len(seq)], b[:, i, : len(seq)], atol=1e-5, rtol=1e-5)


def test_every_rotary_attention_is_patched_and_weights_fall_back():
    enc = _encoder(False)
    module = enc.module_
    n_blocks = len(module.layers)
    assert fuse_attention(module) == n_blocks
    tokens = enc.batch_converter_([("a", SEQS[0]), ("b", SEQS[2])])[2]
    with torch.inference_mode():
        out = module(tokens, repr_layers=[n_blocks], return_contacts=True)
    # Contacts need per-head attention weights: those calls take fair-esm's own path.
    assert out["attentions"].shape[:3] == (2, n_blocks, module.attention_heads)
