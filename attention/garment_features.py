"""The reference (garment) UNet's forward: captures one tensor per transformer block, keyed by ComfyUI block.

IDM-VTON's GarmentNet gives its norm1 outputs; OOTDiffusion's garment UNet its raw block inputs (docs/idm_vton.md,
"GarmentNet"). The forward runs the blocks itself (time embedding only, no adm `y`) and stops right after the
last wanted block, so the rest of the decoder is skipped.
"""

from __future__ import annotations

import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import forward_timestep_embed
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

from .reference_spec import CapturePoint, FeatureKey


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


def _capture_hooks(unet, wanted: list[FeatureKey], capture: CapturePoint, captured: dict, remaining: set) -> list:
    """Forward hooks on each wanted block's norm1: its input (BLOCK_INPUT) or its output (NORM1_OUTPUT)."""
    blocks = transformer_blocks(unet)
    missing = [key for key in wanted if key not in blocks]
    if missing:
        raise ValueError(f"the reference UNet has no transformer block for {missing[:3]}: its layout differs from the denoiser's.")

    def keep(key, tensor):
        if key in remaining:
            captured[key] = tensor
            remaining.discard(key)

    hooks = []
    for key in wanted:
        norm1 = blocks[key].norm1
        if capture == CapturePoint.BLOCK_INPUT:
            hooks.append(norm1.register_forward_pre_hook(lambda module, args, key=key: keep(key, args[0])))
        else:
            hooks.append(norm1.register_forward_hook(lambda module, args, output, key=key: keep(key, output)))
    return hooks


def garment_features(
    unet,
    latent: torch.Tensor,
    timesteps: torch.Tensor,
    context: torch.Tensor,
    wanted: list[FeatureKey],
    capture: CapturePoint = CapturePoint.NORM1_OUTPUT,
) -> dict[FeatureKey, torch.Tensor]:
    """Runs `unet` (no adm embedding) on `latent` and returns the wanted blocks' captured tensors (B, tokens, C)."""
    remaining = set(wanted)
    captured: dict[FeatureKey, torch.Tensor] = {}
    hooks = _capture_hooks(unet, list(wanted), CapturePoint(capture), captured, remaining)
    options = {"original_shape": list(latent.shape), "transformer_index": 0}
    try:
        t_emb = timestep_embedding(timesteps, unet.model_channels, repeat_only=False).to(latent.dtype)
        emb = unet.time_embed(t_emb)
        skips: list[torch.Tensor] = []
        h = latent
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
    finally:
        for hook in hooks:
            hook.remove()
    return {key: captured[key] for key in wanted}
