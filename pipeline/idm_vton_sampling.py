"""What the IDM-VTON Sampler node runs: ComfyUI's KSampler, plus the original's "leading" timestep schedule.

The original samples with DDPM over diffusers' "leading" timesteps: with stride = 1000 // steps, the timesteps
i * stride + 1 for i < steps, from the largest down (30 steps: 958, 925, ..., 1). ComfyUI's `ddim_uniform` takes the
same stride from index 1 but keeps going while an index fits, so at some step counts it adds one step at the top
(30 steps: 31 steps from t=991). They agree at 2, 4, 20, 25 and 50 steps. The `leading (original)` scheduler of the
node gives the original's schedule at every step count (docs/idm_vton.md, "Prompts, guidance and schedule").
"""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

import nodes as comfy_nodes

LEADING = "leading (original)"
SCHEDULERS = [*comfy.samplers.KSampler.SCHEDULERS, LEADING]
TRAIN_TIMESTEPS = 1000
STEPS_OFFSET = 1


def leading_sigmas(model_sampling, steps: int) -> torch.Tensor:
    """The sigmas of diffusers' leading timesteps (steps_offset 1) for a 1000-step model, then 0."""
    stride = TRAIN_TIMESTEPS // steps
    timesteps = [index * stride + STEPS_OFFSET for index in reversed(range(steps))]
    table = model_sampling.sigmas
    return torch.cat([table[timesteps].float().cpu(), table.new_zeros(1).float().cpu()])


def sample_tryon(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive, negative, latent: dict) -> dict:
    """ComfyUI's KSampler with any sampler; the `leading (original)` scheduler samples over the original's timesteps."""
    if scheduler != LEADING:
        return comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent)[0]
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    sigmas = leading_sigmas(model.get_model_object("model_sampling"), steps)
    result = comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        sampler_name,
        comfy.samplers.KSampler.SCHEDULERS[0],  # unused: the sigmas are given
        positive,
        negative,
        samples,
        noise_mask=latent.get("noise_mask"),
        sigmas=sigmas,
        callback=latent_preview.prepare_callback(model, steps),
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
        seed=seed,
    )
    return {**latent, "samples": result}
