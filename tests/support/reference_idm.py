"""Independent reference of IDM-VTON's inference math on diffusers (tests and benchmarks only).

Literal formulations, as the original: self-attention over cat([n, g]) (2N tokens) and keep the first N;
zero garment features for the unconditional half; text + IP attention summed before to_out;
GarmentNet run to its end.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from torch import nn

IP_TOKENS = 16


def original_clip_processor():
    """The image processor the original code ran: transformers 4.x `CLIPImageProcessor()`, PIL-based.

    transformers 5 renamed that one `CLIPImageProcessorPil`; its `CLIPImageProcessor` is a torchvision port whose
    resize differs by up to 0.015.
    """
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as Processor
    return Processor()


def original_clip_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) floats on the 1/255 grid (an image file's pixels) -> the original's CLIP pixel values (B, 3, 224, 224)."""
    from PIL import Image

    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    processed = original_clip_processor()(images=[Image.fromarray(np.ascontiguousarray(p)) for p in pixels], return_tensors="np")
    return torch.from_numpy(processed["pixel_values"])


class PerceiverAttentionLiteral(nn.Module):
    def __init__(self, dim: int, dim_head: int = 64):
        super().__init__()
        self.dim_head, self.heads = dim_head, dim // dim_head
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, dim * 2, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x, latents):
        x, latents = self.norm1(x), self.norm2(latents)
        b, length, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        heads = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))
        weight = ((q * scale) @ (k * scale).transpose(-2, -1)).float().softmax(dim=-1).type(q.dtype)
        return self.to_out((weight @ v).permute(0, 2, 1, 3).reshape(b, length, -1))


class ResamplerLiteral(nn.Module):
    """IDM-VTON's `encoder_hid_proj` (IP-Adapter Plus), with its key names."""

    def __init__(self, dim: int, depth: int, num_queries: int, embedding_dim: int, output_dim: int, ff_mult: int = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        PerceiverAttentionLiteral(dim),
                        nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult, bias=False), nn.GELU(), nn.Linear(dim * ff_mult, dim, bias=False)),
                    ]
                )
                for _ in range(depth)
            ]
        )

    def forward(self, x):
        latents = self.latents.repeat(x.size(0), 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


def sdpa(attn, query, key, value):
    b = query.shape[0]
    heads = attn.heads
    split = lambda t: t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2)  # noqa: E731
    out = torch.nn.functional.scaled_dot_product_attention(split(query), split(key), split(value))
    return out.transpose(1, 2).reshape(b, -1, heads * (query.shape[-1] // heads))


class IPAttnProcessorLiteral(nn.Module):
    """attn2: the last 16 encoder tokens are IP tokens; text and IP attention summed before to_out."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        text, ip = encoder_hidden_states[:, :-IP_TOKENS], encoder_hidden_states[:, -IP_TOKENS:]
        query = attn.to_q(hidden_states)
        out = sdpa(attn, query, attn.to_k(text), attn.to_v(text))
        out = out + self.scale * sdpa(attn, query, self.to_k_ip(ip), self.to_v_ip(ip))
        return attn.to_out[1](attn.to_out[0](out))


class ReferenceAttnProcessorLiteral:
    """attn1 of TryonNet: attention over cat([n, g]) (2N tokens), first N outputs kept."""

    def __init__(self):
        self.garment: torch.Tensor | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        n_tokens = hidden_states.shape[1]
        joint = torch.cat([hidden_states, self.garment.to(hidden_states)], dim=1) if self.garment is not None else hidden_states
        out = sdpa(attn, attn.to_q(joint), attn.to_k(joint), attn.to_v(joint))
        return attn.to_out[1](attn.to_out[0](out))[:, :n_tokens]


class CaptureAttnProcessor:
    """attn1 of GarmentNet: records its input (the norm1 output) and attends normally."""

    def __init__(self, sink: list):
        self.sink = sink

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.sink.append(hidden_states)
        out = sdpa(attn, attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states))
        return attn.to_out[1](attn.to_out[0](out))


def self_attention_names(unet: UNet2DConditionModel) -> list[str]:
    """attn1 processor names in execution order: down blocks, mid block, up blocks."""
    names = [name for name in unet.attn_processors if name.endswith("attn1.processor")]
    stage = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    return sorted(names, key=lambda name: stage[name.split(".")[0]])  # stable: module order within a stage


def install_ip_processors(unet: UNet2DConditionModel, scale: float = 1.0) -> None:
    """IP processors (modules, so their weights live in the state dict) on every attn2; literal attn1 elsewhere."""
    processors = {}
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            block = unet.get_submodule(name[: -len(".processor")])
            processors[name] = IPAttnProcessorLiteral(block.to_q.out_features, block.to_k.in_features, scale)
        else:
            processors[name] = ReferenceAttnProcessorLiteral()
    unet.set_attn_processor(processors)


def garment_features_reference(garment_unet: UNet2DConditionModel, garment_latent, timestep, context) -> list[torch.Tensor]:
    """GarmentNet run to its end; the norm1 outputs of all transformer blocks in module order."""
    sink: list[torch.Tensor] = []
    garment_unet.set_attn_processor(
        {name: CaptureAttnProcessor(sink) if name.endswith("attn1.processor") else _Plain() for name in garment_unet.attn_processors}
    )
    garment_unet(garment_latent, timestep, encoder_hidden_states=context)
    return sink


class _Plain:
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        out = sdpa(attn, attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context))
        return attn.to_out[1](attn.to_out[0](out))


def tryon_eps_reference(
    tryon_unet,
    garment_unet,
    sample,
    timestep,
    concat,
    text_cond,
    text_uncond,
    pooled_cond,
    pooled_uncond,
    time_ids,
    ip_cond,
    ip_uncond,
    garment_latent,
    garment_context,
):
    """(eps_uncond, eps_cond) for a CFG batch [uncond, cond], the original's way."""
    features = garment_features_reference(garment_unet, garment_latent, timestep, garment_context)
    batch = sample.shape[0]
    names = self_attention_names(tryon_unet)
    processors = tryon_unet.attn_processors
    for name, feature in zip(names, features, strict=True):
        feature = feature.expand(batch, -1, -1) if feature.shape[0] == 1 else feature
        processors[name].garment = torch.cat([torch.zeros_like(feature), feature], dim=0)
    tryon_unet.set_attn_processor(processors)
    expand = lambda t: t.expand(batch, *t.shape[1:]) if t.shape[0] == 1 else t  # noqa: E731
    hidden = torch.cat([torch.cat([expand(text_uncond), expand(ip_uncond)], dim=1), torch.cat([expand(text_cond), expand(ip_cond)], dim=1)], dim=0)
    x = torch.cat([sample, concat], dim=1).repeat(2, 1, 1, 1)
    added = {"text_embeds": torch.cat([expand(pooled_uncond), expand(pooled_cond)]), "time_ids": time_ids.repeat(2 * batch, 1)}
    eps = tryon_unet(x, timestep, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
    return eps.chunk(2)
