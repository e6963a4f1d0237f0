"""GarmentNet forward: the norm1 output before attn1 of every transformer block, keyed by ComfyUI block."""

from __future__ import annotations

import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import forward_timestep_embed
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

FeatureKey = tuple[str, int, int]  # (block_name, block_number, block_index)


class _FeaturesComplete(Exception):
    """Stops the forward pass once the last needed block's features are captured."""


def transformer_blocks(unet) -> dict[FeatureKey, torch.nn.Module]:
    """Every (block_name, number, index) of a ComfyUI UNetModel's BasicTransformerBlocks, in execution order."""
    blocks: dict[FeatureKey, torch.nn.Module] = {}

    def blocks_of(module, name: str, number: int):
        for layer in module:
            for index, block in enumerate(getattr(layer, "transformer_blocks", ())):
                blocks[(name, number, index)] = block

    for number, module in enumerate(unet.input_blocks):
        blocks_of(module, "input", number)
    if unet.middle_block is not None:
        blocks_of(unet.middle_block, "middle", 0)
    for number, module in enumerate(unet.output_blocks):
        blocks_of(module, "output", number)
    return blocks


def transformer_block_widths(unet) -> dict[FeatureKey, int]:
    """Every transformer block key of a ComfyUI UNetModel, in execution order, with its width."""
    return {key: block.norm1.normalized_shape[0] for key, block in transformer_blocks(unet).items()}


def garment_features(unet, latent: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, wanted: list[FeatureKey]) -> dict[FeatureKey, torch.Tensor]:
    """Runs `unet` (no adm embedding) on the clean garment latent and returns the wanted norm1 features.

    The pass stops right after the last wanted block, so the rest of the decoder is skipped.
    """
    remaining = set(wanted)
    captured: dict[FeatureKey, torch.Tensor] = {}

    def capture(n, context_attn1, value_attn1, extra_options):
        key = (extra_options["block"][0], extra_options["block"][1], extra_options["block_index"])
        if key in remaining:
            captured[key] = n
            remaining.discard(key)
        return n, context_attn1, value_attn1

    options = {"patches": {"attn1_patch": [capture]}, "original_shape": list(latent.shape), "transformer_index": 0}
    t_emb = timestep_embedding(timesteps, unet.model_channels, repeat_only=False).to(latent.dtype)
    emb = unet.time_embed(t_emb)
    skips: list[torch.Tensor] = []
    h = latent
    try:
        for number, module in enumerate(unet.input_blocks):
            options["block"] = ("input", number)
            h = forward_timestep_embed(module, h, emb, context, options)
            skips.append(h)
            if not remaining:
                raise _FeaturesComplete
        options["block"] = ("middle", 0)
        if unet.middle_block is not None:
            h = forward_timestep_embed(unet.middle_block, h, emb, context, options)
        if not remaining:
            raise _FeaturesComplete
        for number, module in enumerate(unet.output_blocks):
            options["block"] = ("output", number)
            h = torch.cat([h, skips.pop()], dim=1)
            h = forward_timestep_embed(module, h, emb, context, options, skips[-1].shape if skips else None)
            if not remaining:
                raise _FeaturesComplete
    except _FeaturesComplete:
        pass
    if remaining:
        raise ValueError(f"GarmentNet has no transformer block for {sorted(remaining)[:3]}: its layout differs from TryonNet's.")
    return captured
