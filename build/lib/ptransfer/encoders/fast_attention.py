"""Fused self-attention for ESM-2 inference.

fair-esm's rotary self-attention materialises the B*H x T x T score tensor, runs a float32
softmax and averages attention weights over heads, which feature extraction never reads.
On CPU that is ~60 % of ESM-2's forward (docs/benchmarks.md); on GPU the score tensor also
bounds the batch size. ``fuse_attention`` routes each rotary attention module of a loaded
model through ``torch.nn.functional.scaled_dot_product_attention``: the same projections,
the same rotary embedding and key-padding mask, no weights returned. Features agree with
fair-esm's own forward to float32 rounding (tested). Anything the fused path does not cover
(attention weights requested, bias_k/v, an explicit attention mask, incremental decoding,
training mode) falls back to fair-esm's forward.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from esm.multihead_attention import MultiheadAttention
from torch import nn


def _fused_forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                   need_head_weights=False, attn_mask=None, **kwargs):
    """T x B x E in, (T x B x E, None) out; fair-esm's signature and semantics."""
    if (need_head_weights or attn_mask is not None or kwargs or self.bias_k is not None
            or self.training or key is not query or value is not query):
        return MultiheadAttention.forward(
            self, query, key, value, key_padding_mask=key_padding_mask,
            need_weights=need_weights, need_head_weights=need_head_weights,
            attn_mask=attn_mask, **kwargs)
    length, batch, dim = query.shape
    heads, head_dim = self.num_heads, dim // self.num_heads

    def by_head(x: torch.Tensor) -> torch.Tensor:  # T x B x E -> (B H) x T x hd
        return x.reshape(length, batch * heads, head_dim).transpose(0, 1)

    q, k = self.rot_emb(by_head(self.q_proj(query)), by_head(self.k_proj(query)))
    v = by_head(self.v_proj(query))
    mask = None
    if key_padding_mask is not None:  # True = padding -> SDPA's True = attend
        mask = (~key_padding_mask.bool()).view(batch, 1, 1, length)
    shape = (batch, heads, length, head_dim)
    out = F.scaled_dot_product_attention(  # B x H x T x hd
        q.reshape(shape), k.reshape(shape), v.reshape(shape), attn_mask=mask, scale=self.scaling)
    return self.out_proj(out.permute(2, 0, 1, 3).reshape(length, batch, dim)), None


def fuse_attention(module: nn.Module) -> int:
    """Patch every rotary attention of ``module`` (this instance only); returns how many."""
    patched = 0
    for sub in module.modules():
        if isinstance(sub, MultiheadAttention) and getattr(sub, "rot_emb", None) is not None:
            sub.forward = types.MethodType(_fused_forward, sub)
            patched += 1
    return patched
