"""Independent literal reference of OOTDiffusion's inference on diffusers (tests and benchmarks only).

Written from the documented facts, as the original computes them, with none of the pack's shortcuts:
- the garment UNet runs to its end once, at timestep 0, on [garment latent, all-zero latent]; every transformer
  block's input (before norm1) is recorded, in execution order;
- each denoiser transformer block does h = cat([h, g]); h = attn1(norm1(h)) + h; keeps the first half of the tokens;
  then attn2 and the feed-forward as stock (the denoiser's own norm1 on the garment tokens, re-applied every call);
- conditioning: hd = [BOS hidden of "", image embedding]; dc = [BOS, word, EOS hidden of the category truncated to 3
  tokens, image embedding]; the same tokens for both CFG halves;
- CFG over the batch [cond, uncond] (garment features, zero-latent features), eps = uncond + s * (cond - uncond);
- diffusers' UniPC (from the original's DPM-Solver config, last sigma repeated) or DDIM (eta 0), with the repaint of
  the area outside the mask after every step (the same noise; the clean original latent after the last step).
"""

from __future__ import annotations

import types

import torch

VAE_SCALING = 0.18215
# The original's ootd/scheduler/scheduler_config.json (a DPMSolverMultistepScheduler config), read by UniPC / DDIM.
OOTD_SCHEDULER_CONFIG = {
    "_class_name": "DPMSolverMultistepScheduler",
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "dynamic_thresholding_ratio": 0.995,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 1,
    "thresholding": False,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": True,
}
CATEGORY_WORDS = {"upper_body": "upperbody", "lower_body": "lowerbody", "dresses": "dress"}  # run_ootd's category_dict


def unipc_scheduler():
    """UniPC from the original's config; diffusers 0.24 (the original's) always repeated the last Karras sigma."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler.from_config({**OOTD_SCHEDULER_CONFIG, "final_sigmas_type": "sigma_min"})


def ddim_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(OOTD_SCHEDULER_CONFIG)


def tokenizer():
    """CLIP's BPE tokenizer from ComfyUI's own tokenizer files (the same vocabulary as the original's)."""
    import comfy_host
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(comfy_host.COMFY_DIR / "comfy" / "sd1_tokenizer"))


def conditioning_tokens(text_encoder, image_embeds: torch.Tensor, model_type: str, category: str = "upper_body") -> torch.Tensor:
    """The original's prompt_embeds: hd [BOS, image] (2 tokens), dc [BOS, word, EOS, image] (4 tokens)."""
    tok = tokenizer()
    image = image_embeds.unsqueeze(1)
    if model_type == "hd":
        ids = tok([""], max_length=2, padding="max_length", truncation=True, return_tensors="pt").input_ids
        embeds = text_encoder(ids)[0].expand(image.shape[0], -1, -1).clone()
        embeds[:, 1:] = image
        return embeds
    ids = tok([CATEGORY_WORDS[category]], max_length=3, padding="max_length", truncation=True, return_tensors="pt").input_ids
    text = text_encoder(ids)[0].expand(image.shape[0], -1, -1)
    return torch.cat([text, image], dim=1)


def image_embeds(encoder, garment_pixels: torch.Tensor) -> torch.Tensor:
    """CLIPVisionModelWithProjection's image_embeds of the garment, with the original's (PIL) CLIP preprocessing."""
    from reference_idm import original_clip_pixel_values

    return encoder(pixel_values=original_clip_pixel_values(garment_pixels)).image_embeds


def transformer_blocks(unet) -> list:
    """The UNet's BasicTransformerBlocks in execution order (down, mid, up; module order within each)."""
    from diffusers.models.attention import BasicTransformerBlock

    stage = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    named = [(name, module) for name, module in unet.named_modules() if isinstance(module, BasicTransformerBlock)]
    return [module for _, module in sorted(named, key=lambda item: stage[item[0].split(".")[0]])]


def garment_features(garment_unet, garment_latent: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
    """The garment UNet run to its end at t=0 on [garment, zeros]; each block's input (before norm1), execution order.

    Returns tensors of batch 2B: the first B rows from the garment latent, the last B from the all-zero latent.
    """
    sink: list[torch.Tensor] = []
    hooks = [
        block.register_forward_pre_hook(lambda module, args, kwargs: sink.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        for block in transformer_blocks(garment_unet)
    ]
    try:
        latents = torch.cat([garment_latent, torch.zeros_like(garment_latent)])
        garment_unet(latents, 0, encoder_hidden_states=torch.cat([context, context]))  # its output sample is discarded
    finally:
        for hook in hooks:
            hook.remove()
    return sink


def _fusion_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, *args, **kwargs):
    """The outfitting fusion block: self-attention over cat([h, g]), first half kept; then cross-attention and FF."""
    h = torch.cat([hidden_states, self.garment_tokens.to(hidden_states)], dim=1)
    h = self.attn1(self.norm1(h)) + h
    h, _ = h.chunk(2, dim=1)
    h = self.attn2(self.norm2(h), encoder_hidden_states=encoder_hidden_states) + h
    return self.ff(self.norm3(h)) + h


def install_fusion(vton_unet) -> list:
    """Makes every transformer block of the denoiser the literal fusion block; returns the blocks (execution order)."""
    blocks = transformer_blocks(vton_unet)
    for block in blocks:
        block.forward = types.MethodType(_fusion_forward, block)
        block.garment_tokens = None
    return blocks


def cfg_eps(vton_unet, blocks, latents, vton_latents, prompt_embeds, features, timestep) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_cond, eps_uncond) of the original's CFG batch [cond, uncond] at `timestep` (latents: the VP sample)."""
    for block, feature in zip(blocks, features, strict=True):
        block.garment_tokens = feature
    sample = torch.cat([torch.cat([latents, latents]), torch.cat([vton_latents, vton_latents])], dim=1)
    eps = vton_unet(sample, timestep, encoder_hidden_states=torch.cat([prompt_embeds, prompt_embeds])).sample
    return eps.chunk(2)


def latent_mask(mask: torch.Tensor, latent_shape) -> torch.Tensor:
    """(B, H, W) in {0, 1} -> (B, 1, h, w) by legacy nearest (pixel 8i, 8j), as the original."""
    return torch.nn.functional.interpolate(mask.unsqueeze(1).float(), size=tuple(latent_shape[-2:]))


def sample(
    vton_unet,
    garment_unet,
    *,
    garment_latent,
    vton_latent,
    original_latent,
    mask,
    prompt_embeds,
    steps: int,
    guidance: float,
    seed: int,
    scheduler: str = "unipc",
    latent_shape=None,
):
    """The original's sampling loop; latents are unscaled VAE latents (the original's), returns the final VP latent."""
    blocks = install_fusion(vton_unet)
    features = garment_features(garment_unet, garment_latent, prompt_embeds)
    sched = unipc_scheduler() if scheduler == "unipc" else ddim_scheduler()
    sched.set_timesteps(steps)
    shape = latent_shape or vton_latent.shape
    latents = torch.randn(shape, generator=torch.manual_seed(seed)) * sched.init_noise_sigma
    noise = latents.clone()
    m = latent_mask(mask, shape)
    original = original_latent * VAE_SCALING
    timesteps = sched.timesteps
    for i, t in enumerate(timesteps):
        model_input = sched.scale_model_input(latents, t)
        eps_cond, eps_uncond = cfg_eps(vton_unet, blocks, model_input, vton_latent, prompt_embeds, features, t)
        eps = eps_uncond + guidance * (eps_cond - eps_uncond)
        latents = sched.step(eps, t, latents).prev_sample
        proper = sched.add_noise(original, noise, timesteps[i + 1 : i + 2]) if i < len(timesteps) - 1 else original
        latents = (1 - m) * proper + m * latents
    return latents
