"""IP-Adapter cross-attention: text attention plus the attention over 16 image tokens, before to_out (docs/idm_vton.md, "IP-Adapter")."""

from __future__ import annotations

import comfy.ldm.modules.attention as comfy_attention
import torch

from .reference_attention import expand_to_batch
from .shared_state_patch import SharedStatePatch


def ip_tokens_for_chunks(cond_tokens: torch.Tensor, uncond_tokens: torch.Tensor, cond_or_uncond: list[int], batch: int) -> torch.Tensor:
    """The IP tokens of every chunk of a CFG batch: image tokens for cond, zero-image tokens for uncond."""
    parts = [expand_to_batch(cond_tokens if kind == 0 else uncond_tokens, batch, "IP tokens") for kind in cond_or_uncond]
    return torch.cat(parts, dim=0)


class IPAdapterTokens:
    """The cond (garment image) and uncond (zero pixel values) IP tokens, copied to the compute device once, on first use."""

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor):
        self.cond, self.uncond = cond, uncond
        self._device_copy: tuple | None = None  # ((device, dtype), cond, uncond)

    def for_chunks(self, cond_or_uncond: list[int], batch: int, like: torch.Tensor) -> torch.Tensor:
        where = (like.device, like.dtype)
        if self._device_copy is None or self._device_copy[0] != where:
            self._device_copy = (where, self.cond.to(like), self.uncond.to(like))
        return ip_tokens_for_chunks(self._device_copy[1], self._device_copy[2], cond_or_uncond, batch)

    def forget_device_copy(self) -> None:
        self._device_copy = None


class IPAttentionReplace(SharedStatePatch):
    """ComfyUI attn2 replace for one cross-attention: SDPA(q, K_text, V_text) + s * SDPA(q, K_ip, V_ip)."""

    def __init__(self, owner, tokens: IPAdapterTokens, layer: torch.nn.Module, strength: float):
        super().__init__(owner)
        self.tokens = tokens
        self.layer = layer  # to_k_ip / to_v_ip of this block
        self.strength = strength

    def to(self, device_or_dtype):
        if isinstance(device_or_dtype, (torch.device, str)):  # loaded or offloaded: the next call copies again
            self.tokens.forget_device_copy()
        return self

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")
        out = comfy_attention.optimized_attention(q, k, v, heads, attn_precision=precision)
        cond_or_uncond = extra_options.get("cond_or_uncond") or [0]
        tokens = self.tokens.for_chunks(cond_or_uncond, q.shape[0] // len(cond_or_uncond), q)
        k_ip, v_ip = self.layer.to_k_ip(tokens), self.layer.to_v_ip(tokens)
        ip_out = comfy_attention.optimized_attention(q, k_ip.to(q.dtype), v_ip.to(q.dtype), heads, attn_precision=precision)
        return out + self.strength * ip_out
