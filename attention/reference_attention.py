"""Garment reference attention: TryonNet self-attention keys/values extended with GarmentNet features."""

from __future__ import annotations

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
