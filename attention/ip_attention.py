"""IP-Adapter cross-attention: text attention plus the attention over 16 image tokens, before to_out."""

from __future__ import annotations

import comfy.ldm.modules.attention as comfy_attention
import torch

from .reference_attention import expand_to_batch
from .shared_state_patch import SharedStatePatch


def ip_tokens_for_chunks(cond_tokens: torch.Tensor, uncond_tokens: torch.Tensor, cond_or_uncond: list[int], batch: int) -> torch.Tensor:
    """The IP tokens of every chunk of a CFG batch: image tokens for cond, zero-image tokens for uncond."""
    parts = [expand_to_batch(cond_tokens if kind == 0 else uncond_tokens, batch, "IP tokens") for kind in cond_or_uncond]
    return torch.cat(parts, dim=0)


class IPAttentionReplace(SharedStatePatch):
    """ComfyUI attn2 replace for one cross-attention: SDPA(q, K_text, V_text) + s * SDPA(q, K_ip, V_ip)."""

    def __init__(self, state, module_name: str):
        super().__init__(state)
        self.module_name = module_name

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")
        out = comfy_attention.optimized_attention(q, k, v, heads, attn_precision=precision)
        cond_or_uncond = extra_options.get("cond_or_uncond") or [0]
        tokens = self.state.ip_tokens(cond_or_uncond, q.shape[0] // len(cond_or_uncond), q)
        layer = self.state.ip_layers[self.module_name]
        k_ip, v_ip = layer.to_k_ip(tokens), layer.to_v_ip(tokens)
        ip_out = comfy_attention.optimized_attention(q, k_ip.to(q.dtype), v_ip.to(q.dtype), heads, attn_precision=precision)
        return out + self.state.ip_strength * ip_out
