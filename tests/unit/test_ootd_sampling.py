"""OOTDiffusion's scheduler and repaint as a ComfyUI SAMPLER / SIGMAS, against diffusers' own schedulers.

An analytic eps model (a fixed function of the VP sample and the integer timestep, as a UNet is) stands in for the
UNet, so these tests check the scheduling math alone: the sigmas, the VE <-> VP mapping, UniPC bh2 order 2 with its
corrector and lower-order final step, DDIM eta 0, the repaint after every step and the start from pure noise.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
from reference_ootd import VAE_SCALING, ddim_scheduler, unipc_scheduler

SHAPE = (1, 4, 6, 5)
# The original UniPC's timesteps for 20 and 4 steps (its scheduler config, set_timesteps)
KARRAS_20 = [999, 962, 921, 876, 827, 772, 710, 640, 561, 474, 380, 285, 197, 123, 69, 35, 15, 6, 2, 0]
KARRAS_4 = [999, 687, 146, 0]


@pytest.fixture(scope="module")
def model_sampling(pack):
    import comfy.model_base
    import comfy.supported_models

    config = comfy.supported_models.SD15({"in_channels": 4, "model_channels": 32, "context_dim": 32, "adm_in_channels": None})
    return comfy.model_base.model_sampling(config, comfy.model_base.ModelType.EPS)


def analytic_eps(x_vp: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """A smooth, nonlinear 'UNet' of the VP sample and the integer timestep; the spatial mean couples the pixels."""
    t = timestep.float().reshape(-1, 1, 1, 1) / 1000
    return torch.tanh(1.3 * x_vp) * (0.6 + t) + 0.2 * torch.sin(3 * x_vp + 5 * t) + 0.1 * t + 0.3 * x_vp.mean(dim=(2, 3), keepdim=True)


class AnalyticGuided:
    """Stands in for ComfyUI's CFG model: VE x and sigma in, denoised out, the UNet at ComfyUI's integer timestep."""

    def __init__(self, model_sampling):
        self.inner_model = types.SimpleNamespace(model_sampling=model_sampling)
        self.calls: list[torch.Tensor] = []

    def __call__(self, x, sigma, **kwargs):
        ms = self.inner_model.model_sampling
        timestep = ms.timestep(sigma)
        self.calls.append(timestep)
        x_vp = ms.calculate_input(sigma, x)
        return x - sigma.reshape(-1, 1, 1, 1) * analytic_eps(x_vp, timestep)


def run_ours(model_sampling, sigmas, mode, noise, original=None, mask=None):
    """Our sampler function as KSAMPLER calls it (original: the scaled latent, mask: the prepared noise mask)."""
    from comfyui_tryon.pipeline.ootd_sampling import sample_ootd

    guided = AnalyticGuided(model_sampling)
    model = types.SimpleNamespace(inner_model=guided, latent_image=original if original is not None else torch.zeros_like(noise), noise=noise)
    x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0) + model.latent_image  # KSAMPLER's noise_scaling at sigma_max
    out = sample_ootd(model, x, sigmas, extra_args={"denoise_mask": mask, "model_options": {}, "seed": 0}, mode=mode)
    return out, guided.calls


def run_diffusers(scheduler, steps, noise, original=None, mask=None):
    """The original's loop with the analytic eps: diffusers' scheduler, the repaint after every step."""
    scheduler.set_timesteps(steps)
    latents = noise.clone() * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        eps = analytic_eps(scheduler.scale_model_input(latents, t), t.reshape(1))
        latents = scheduler.step(eps, t, latents).prev_sample
        if mask is not None:
            proper = scheduler.add_noise(original, noise, timesteps[i + 1 : i + 2]) if i < len(timesteps) - 1 else original
            latents = (1 - mask) * proper + mask * latents
    return latents, [int(t) for t in timesteps]


def test_karras_sigmas_are_the_original_uniPC_sigmas_with_the_last_repeated(model_sampling, pack):
    from comfyui_tryon.pipeline.ootd_sampling import karras_sigmas

    for steps, expected in ((20, KARRAS_20), (4, KARRAS_4)):
        ours = karras_sigmas(model_sampling, steps)
        reference = unipc_scheduler()
        reference.set_timesteps(steps)
        assert ours.shape == (steps + 1,) and ours[-1] == ours[-2] > 0
        assert torch.allclose(ours, reference.sigmas.float(), rtol=1e-4)  # ComfyUI builds its sigma table in float64, diffusers in float32
        assert [int(t) for t in model_sampling.timestep(ours[:-1])] == [int(t) for t in reference.timesteps] == expected
    assert math.isclose(float(karras_sigmas(model_sampling, 20)[0]), 14.6146, rel_tol=1e-4)
    assert math.isclose(float(karras_sigmas(model_sampling, 20)[-1]), 0.029168, rel_tol=1e-3)


def test_ddim_sigmas_are_the_original_ddim_timesteps_ending_at_sigma_zero(model_sampling, pack):
    from comfyui_tryon.pipeline.ootd_sampling import ddim_sigmas

    reference = ddim_scheduler()
    reference.set_timesteps(20)
    ours = ddim_sigmas(model_sampling, 20)
    assert [int(t) for t in model_sampling.timestep(ours[:-1])] == [int(t) for t in reference.timesteps] == list(range(951, 0, -50))
    assert torch.equal(ours[-1], model_sampling.sigmas[0].float())  # set_alpha_to_one false: the last step ends at sigma(t=0)


@pytest.mark.parametrize("steps", [4, 7])
@pytest.mark.parametrize("mode", ["unipc", "ddim"])
def test_sampler_matches_diffusers_without_a_mask(model_sampling, mode, steps, pack):
    from comfyui_tryon.pipeline.ootd_sampling import ddim_sigmas, karras_sigmas

    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    sigmas = karras_sigmas(model_sampling, steps) if mode == "unipc" else ddim_sigmas(model_sampling, steps)
    ours, calls = run_ours(model_sampling, sigmas, mode, noise)
    reference, timesteps = run_diffusers(unipc_scheduler() if mode == "unipc" else ddim_scheduler(), steps, noise)
    assert [int(c) for c in calls] == timesteps  # one model call per step, at the original's timesteps
    assert (ours - reference).abs().max().item() <= 1e-5 * reference.abs().max().item()


@pytest.mark.parametrize("mode", ["unipc", "ddim"])
def test_sampler_repaints_outside_the_mask_after_every_step_as_the_original(model_sampling, mode, pack):
    from comfyui_tryon.pipeline.ootd_sampling import ddim_sigmas, karras_sigmas

    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(SHAPE, generator=generator)
    original = torch.randn(SHAPE, generator=generator) * VAE_SCALING * 5
    mask = torch.zeros(1, 1, *SHAPE[2:])
    mask[..., 1:4, 1:4] = 1
    steps = 5
    sigmas = karras_sigmas(model_sampling, steps) if mode == "unipc" else ddim_sigmas(model_sampling, steps)
    # the apply node's latent is the original masked (nothing of it inside the mask); KSAMPLER expands the mask to 4 channels
    ours, _ = run_ours(model_sampling, sigmas, mode, noise, original * (1 - mask), mask.expand(SHAPE))
    reference, _ = run_diffusers(unipc_scheduler() if mode == "unipc" else ddim_scheduler(), steps, noise, original, mask)
    assert (ours - reference).abs().max().item() <= 1e-5 * reference.abs().max().item()
    assert torch.equal(ours * (1 - mask), original * (1 - mask))  # the clean original outside after the last step
    unmasked, _ = run_diffusers(unipc_scheduler() if mode == "unipc" else ddim_scheduler(), steps, noise)
    assert ((reference - unmasked) * mask).abs().max().item() > 1e-3  # the repaint reaches inside through the model


def test_sampler_with_stock_sigmas_ends_at_the_denoised_latent(model_sampling, pack):
    """With a stock scheduler (last sigma 0) the OOTDiffusion sampler still runs: the last step lands on x0."""
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(model_sampling, "karras", 6)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    for mode in ("unipc", "ddim"):
        out, calls = run_ours(model_sampling, sigmas, mode, noise)
        assert torch.isfinite(out).all() and len(calls) == 6


def test_unknown_modes_and_schedules_are_clear_errors(model_sampling, pack):
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.pipeline.ootd_sampling import ootd_sampler, ootd_sigmas

    with pytest.raises(TryOnInputError, match="mode"):
        ootd_sampler("euler")
    model = types.SimpleNamespace(get_model_object=lambda name: model_sampling)
    with pytest.raises(TryOnInputError, match="schedule"):
        ootd_sigmas(model, 20, "normal")
    assert ootd_sigmas(model, 20, "karras").shape == (21,)
    with pytest.raises(TryOnInputError, match="steps: the ddim schedule takes at most 999 steps"):
        ootd_sigmas(model, 1000, "ddim")  # t = 1000 would be past the model's table
    longest = ootd_sigmas(model, 999, "ddim")
    assert longest.shape == (1000,) and torch.isfinite(longest).all()
    assert ootd_sigmas(model, 1000, "karras").shape == (1001,)
