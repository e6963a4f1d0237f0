"""IP-Adapter Plus Perceiver Resampler: CLIP ViT-H penultimate states -> 16 IP tokens for TryonNet."""

from __future__ import annotations

import comfy.ops
import torch
from torch import nn

DIM_HEAD = 64


class PerceiverAttention(nn.Module):
    """Latent queries attending to cat(image tokens, latents); no biases, heads = dim / 64."""

    def __init__(self, dim: int, operations=comfy.ops.disable_weight_init, device=None, dtype=None):
        super().__init__()
        self.heads = max(dim // DIM_HEAD, 1)
        self.norm1 = operations.LayerNorm(dim, device=device, dtype=dtype)
        self.norm2 = operations.LayerNorm(dim, device=device, dtype=dtype)
        self.to_q = operations.Linear(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_kv = operations.Linear(dim, dim * 2, bias=False, device=device, dtype=dtype)
        self.to_out = operations.Linear(dim, dim, bias=False, device=device, dtype=dtype)

    def forward(self, image_tokens: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        image_tokens = self.norm1(image_tokens)
        latents = self.norm2(latents)
        batch = latents.shape[0]
        query = self.to_q(latents)
        key, value = self.to_kv(torch.cat([image_tokens, latents], dim=1)).chunk(2, dim=-1)
        split = lambda t: t.view(batch, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        out = torch.nn.functional.scaled_dot_product_attention(split(query), split(key), split(value))
        return self.to_out(out.transpose(1, 2).reshape(batch, -1, query.shape[-1]))


class Resampler(nn.Module):
    """Key layout of IDM-VTON's `encoder_hid_proj`: latents, proj_in, layers.i.{0 attn, 1 ff}, proj_out, norm_out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_queries: int,
        embedding_dim: int,
        output_dim: int,
        ff_mult: int = 4,
        operations=comfy.ops.disable_weight_init,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.empty(1, num_queries, dim, device=device, dtype=dtype))
        self.proj_in = operations.Linear(embedding_dim, dim, device=device, dtype=dtype)
        self.proj_out = operations.Linear(dim, output_dim, device=device, dtype=dtype)
        self.norm_out = operations.LayerNorm(output_dim, device=device, dtype=dtype)
        self.layers = nn.ModuleList()
        for _ in range(depth):
            feed_forward = nn.Sequential(
                operations.LayerNorm(dim, device=device, dtype=dtype),
                operations.Linear(dim, dim * ff_mult, bias=False, device=device, dtype=dtype),
                nn.GELU(),
                operations.Linear(dim * ff_mult, dim, bias=False, device=device, dtype=dtype),
            )
            self.layers.append(nn.ModuleList([PerceiverAttention(dim, operations, device, dtype), feed_forward]))

    @classmethod
    def from_state_dict_shapes(cls, state_dict: dict[str, torch.Tensor], prefix: str = "", **kwargs) -> "Resampler":
        """Builds a Resampler whose sizes are read off a state dict with IDM's key names."""
        _, num_queries, dim = state_dict[prefix + "latents"].shape
        depth = len({k[len(prefix) :].split(".")[1] for k in state_dict if k.startswith(prefix + "layers.")})
        embedding_dim = state_dict[prefix + "proj_in.weight"].shape[1]
        output_dim = state_dict[prefix + "proj_out.weight"].shape[0]
        ff_mult = state_dict[prefix + "layers.0.1.1.weight"].shape[0] // dim
        return cls(dim, depth, num_queries, embedding_dim, output_dim, ff_mult, **kwargs)

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        latents = comfy.ops.cast_to_input(self.latents, image_tokens).repeat(image_tokens.shape[0], 1, 1)
        image_tokens = self.proj_in(image_tokens)
        for attention, feed_forward in self.layers:
            latents = attention(image_tokens, latents) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))
