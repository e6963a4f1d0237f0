"""Garment reference attention: TryonNet self-attention keys/values extended with GarmentNet features."""

from __future__ import annotations

import functools
import math

import comfy.ldm.modules.attention as comfy_attention
import torch

from .shared_state_patch import SharedStatePatch


def expand_to_batch(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Broadcasts a batch of 1 to `batch`; a batch already equal passes through."""
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(f"{what}: batch {tensor.shape[0]} cannot serve a batch of {batch}")


def reference_context(n: torch.Tensor, garment: torch.Tensor, cond_or_uncond: list[int], strength: float = 1.0) -> torch.Tensor:
    """cat([n, g]) along tokens, with g = the garment features for cond chunks and zeros for uncond chunks.

    `n` is (chunks * B, N, C) with chunks = len(cond_or_uncond); `garment` is (1 or B, M, C).
    The uncond zeros stay: they take softmax mass (logit 0) exactly as the original's zero features do.
    """
    chunks = len(cond_or_uncond)
    batch = n.shape[0] // chunks
    garment = expand_to_batch(garment.to(n), batch, "garment features") * strength
    zeros = torch.zeros_like(garment)
    extra = torch.cat([garment if kind == 0 else zeros for kind in cond_or_uncond], dim=0)
    return torch.cat([n, extra], dim=1)


class ReferenceAttentionPatch(SharedStatePatch):
    """ComfyUI `attn1_patch`: queries from the person tokens, keys/values over cat([n, g])."""

    def __call__(self, n, context_attn1, value_attn1, extra_options):
        key = (extra_options["block"][0], extra_options["block"][1], extra_options["block_index"])
        garment = self.state.features_for(key)
        if garment is None:
            return n, context_attn1, value_attn1
        cond_or_uncond = extra_options.get("cond_or_uncond") or [0]
        strength = self.state.garment_strength
        context = reference_context(context_attn1, garment, cond_or_uncond, strength)
        value = context if value_attn1 is context_attn1 else reference_context(value_attn1, garment, cond_or_uncond, strength)
        return n, context, value


@functools.lru_cache(maxsize=64)
def zero_key_biases(count: int, dtype: torch.dtype) -> tuple[float, ...]:
    """Additive logits b_j, each exactly representable in `dtype`, with sum(exp(b_j)) == count (to 2e-6 relative).

    `count` identical keys weigh as much in a softmax as one of them with logit bias log(count). In fp32 one
    bias is exact; in fp16/bf16 log(count) rounds coarsely (bf16: ~6% of count at 3072), so the remainder
    goes to a second (third...) copy of the key with its own bias.
    """
    biases: list[float] = []
    remaining = float(count)
    while remaining > count * 2e-6 and len(biases) < 4:
        exact = torch.tensor(math.log(remaining), dtype=torch.float64)
        bias = exact.to(dtype)
        if float(bias) > float(exact):  # round down, so that the remainder stays >= 0
            bias = torch.nextafter(bias, torch.tensor(-math.inf, dtype=dtype))
        biases.append(float(bias))
        remaining -= math.exp(float(bias))
    return tuple(biases)  # cached: called for every block and step with the same few (count, dtype)


class ReferenceAttentionReplace(SharedStatePatch):
    """ComfyUI attn1 replace for one block: reference attention with the uncond half's zeros as one biased key.

    Cond chunks attend over [person keys | to_k(g)]; uncond chunks over [person keys | k0] with logit bias log(M)
    on k0 = to_k(0) (value to_v(0)), which is exactly softmax over the M materialised zero tokens of the original.
    GarmentNet's keys/values are projected once per call (not per chunk), the zero tokens not at all.
    """

    def __init__(self, state, key, attn1):
        super().__init__(state)
        self.key = key
        self.attn1 = attn1

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")
        garment = self.state.features_for(self.key)
        if garment is None:
            return comfy_attention.optimized_attention(q, k, v, heads, attn_precision=precision)
        cond_or_uncond = extra_options.get("cond_or_uncond") or [0]
        batch = q.shape[0] // len(cond_or_uncond)
        outs = []
        garment_kv = zero_kv = None
        for chunk, kind in enumerate(cond_or_uncond):
            rows = slice(chunk * batch, (chunk + 1) * batch)
            if kind == 0:
                if garment_kv is None:
                    g = garment.to(q) * self.state.garment_strength
                    garment_kv = (
                        expand_to_batch(self.attn1.to_k(g), batch, "garment features"),
                        expand_to_batch(self.attn1.to_v(g), batch, "garment features"),
                    )
                keys, values = torch.cat([k[rows], garment_kv[0]], dim=1), torch.cat([v[rows], garment_kv[1]], dim=1)
                outs.append(comfy_attention.optimized_attention(q[rows], keys, values, heads, attn_precision=precision))
            else:
                if zero_kv is None:
                    zero = q.new_zeros(1, 1, self.attn1.to_k.in_features)
                    biases = zero_key_biases(garment.shape[1], q.dtype)
                    mask = torch.zeros(1, 1, k.shape[1] + len(biases), dtype=q.dtype, device=q.device)
                    mask[..., k.shape[1] :] = torch.tensor(biases, dtype=q.dtype)
                    zero_kv = (self.attn1.to_k(zero).expand(batch, len(biases), -1), self.attn1.to_v(zero).expand(batch, len(biases), -1), mask)
                keys, values = torch.cat([k[rows], zero_kv[0]], dim=1), torch.cat([v[rows], zero_kv[1]], dim=1)
                outs.append(comfy_attention.optimized_attention_masked(q[rows], keys, values, heads, mask=zero_kv[2], attn_precision=precision))
        return torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
