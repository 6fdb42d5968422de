"""Fused ESM-2 attention gives fair-esm's own features, and falls back where it must.

The reference is independent of the code under test: a fresh fair-esm ``ESM2`` built by the
package and given the same state dict, never patched, run through its own forward. The
fused side is counted (``scaled_dot_product_attention`` must run once per block), so a
fusion that silently stays off cannot pass as "fused equals plain".
"""

from __future__ import annotations

import esm
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from tiny_models import TINY_ARCH, model_config

from ptransfer.encoders.base import CheckpointRef
from ptransfer.encoders.fast_attention import fuse_attention

# Lengths 22, 9, 2, 13: a batch with much padding (fair-esm's key-padding mask matters).
SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "ACDEFGHIK", "WY", "MKTAYIAKQRQLL"]


def _fused_encoder(weights):
    enc = instantiate(model_config("esm2", weights=str(weights)), _convert_="all")
    return enc.load(CheckpointRef(), ablation="pretrained", seed=0)  # fast_attention default


def _fair_esm_reference(state: dict) -> torch.nn.Module:
    """fair-esm's own ESM-2 with ``state``: built by the package, its forward untouched."""
    arch = TINY_ARCH["esm2"]
    module = esm.model.esm2.ESM2(alphabet="ESM-1b", **arch)
    module.load_state_dict(state)
    for sub in module.modules():  # nothing patched: every forward is the class's own
        assert "forward" not in vars(sub)
    return module.eval()


def test_fused_features_equal_fair_esm_own_forward_every_layer_with_padding(
        tiny_esm2_path, monkeypatch):
    fused = _fused_encoder(tiny_esm2_path)
    reference = _fair_esm_reference(fused.module_.state_dict())
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    got = fused.embed(SEQS)  # n_layers x B x T x D
    assert len(calls) == TINY_ARCH["esm2"]["num_layers"]  # the fused path ran, every block
    calls.clear()
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    _, _, tokens = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(SEQS)])
    n_layers = fused.n_layers
    with torch.inference_mode():
        out = reference(tokens, repr_layers=list(range(n_layers)))
    assert calls == []  # the reference never went through the fused path
    assert got.shape[0] == n_layers == TINY_ARCH["esm2"]["num_layers"] + 1
    for layer in range(n_layers):
        want = out["representations"][layer]  # B x (1 + T + 1 + pad) x D, BOS first
        for i, seq in enumerate(SEQS):
            torch.testing.assert_close(got[layer, i, : len(seq)], want[i, 1 : 1 + len(seq)],
                                       atol=1e-5, rtol=1e-5)
    # Not vacuous: the layers differ from one another and attention changes the features.
    assert not torch.allclose(got[1], got[2], atol=1e-3)


def test_every_rotary_attention_is_patched_and_weights_fall_back(tiny_esm2_path):
    enc = instantiate(model_config("esm2", weights=str(tiny_esm2_path)),
                      fast_attention=False, _convert_="all")
    enc.load(CheckpointRef(), ablation="pretrained", seed=0)
    module = enc.module_
    n_blocks = len(module.layers)
    assert fuse_attention(module) == n_blocks
    tokens = enc.batch_converter_([("a", SEQS[0]), ("b", SEQS[2])])[2]
    with torch.inference_mode():
        out = module(tokens, repr_layers=[n_blocks], return_contacts=True)
    # Contacts need per-head attention weights: those calls take fair-esm's own path.
    assert out["attentions"].shape[:3] == (2, n_blocks, module.attention_heads)
