"""OOTDiffusion's sampling as a ComfyUI SAMPLER and SIGMAS: its scheduler and its repaint of the area outside the mask.

The original (README.md, "OOTDiffusion") samples with diffusers' UniPC built from a DPM-Solver config: bh2, order 2,
predicting x0, corrector on, lower order at the last step, on Karras sigmas (rho 7) from sigma_max to sigma_min with
the last sigma repeated (not 0). After every step it repaints the area outside the mask with the original latent
noised to the next step (the same initial noise); after the last step with the clean original latent. DDIM (eta 0)
on the same config is the other mode.

Mapping onto ComfyUI (SD1.5 is an eps model; ComfyUI's x is VE, x = x0 + sigma * eps; diffusers' latents are VP,
x_vp = alpha * x0 + sigma_vp * eps, with alpha = 1 / sqrt(1 + sigma^2) and sigma_vp = sigma * alpha):

- the same sigma: diffusers' Karras sigma is the VE sigma; x_vp = alpha * x. ComfyUI feeds the UNet x * alpha (= x_vp)
  at timestep argmin |log sigma - log sigma_t|, which is the original's `round(t(sigma))`: the UNet calls are identical;
- the model's denoised output is the original's x0 prediction; in VE terms UniPC's update reads
  x_t = (sigma_t / sigma_s) * x_s - expm1(-h) * m0 - B(h) * (...), with lambda = -log sigma, h = lambda_t - lambda_s,
  B(h) = expm1(-h) (bh2), and DDIM (eta 0) is Euler: x_t = x0 + sigma_t * eps;
- the repaint: (1 - m) * (x0_orig + sigma_next * noise) + m * x (VE), the original's
  (1 - m) * add_noise(x0_orig, noise, t_next) + m * x_vp divided by alpha;
- the original starts from pure noise (x_vp = noise, no image), x = noise * sqrt(1 + sigma_0^2);
- the original's final latent is VP at the last sigma: alpha_last * x inside the mask, the clean original outside.

What the sampler needs comes through ComfyUI's own inpainting path: the apply node's LATENT carries the original
latent (masked) and a `noise_mask`; KSAMPLER hands the sampler function the original latent (scaled),
the initial noise and the mask (`model.latent_image`, `model.noise`, `extra_args["denoise_mask"]`).
"""

from __future__ import annotations

import math

import comfy.samplers
import numpy as np
import torch

from ..errors import TryOnInputError
from ..preprocess.labels import check_choice

MODES = ("unipc", "ddim")  # the original's UniPC, or DDIM eta 0
SCHEDULES = ("karras", "ddim")  # UniPC's Karras sigmas with the last one repeated, or DDIM's leading timesteps
KARRAS_RHO = 7.0
SOLVER_ORDER = 2
DDIM_STEPS_OFFSET = 1
DEFAULT_STEPS = 20


# ----------------------------------------------------------------------------------------------
# Sigmas
# ----------------------------------------------------------------------------------------------
def karras_sigmas(model_sampling, steps: int) -> torch.Tensor:
    """The original UniPC's sigmas: Karras (rho 7) from sigma_max to sigma_min over `steps`, then sigma_min repeated."""
    sigma_min, sigma_max = float(model_sampling.sigma_min), float(model_sampling.sigma_max)
    ramp = np.linspace(0, 1, steps)
    inv_min, inv_max = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** KARRAS_RHO
    return torch.from_numpy(np.concatenate([sigmas, sigmas[-1:]]).astype(np.float32))


def ddim_sigmas(model_sampling, steps: int) -> torch.Tensor:
    """The original config's DDIM: leading timesteps (+1 offset), ending at sigma(t=0) (set_alpha_to_one false)."""
    train_steps = len(model_sampling.sigmas)
    ratio = train_steps // steps
    timesteps = (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64) + DDIM_STEPS_OFFSET
    table = model_sampling.sigmas.float().cpu()
    return torch.cat([table[torch.from_numpy(timesteps.copy())], table[:1]])


def ootd_sigmas(model, steps: int, schedule: str = "karras") -> torch.Tensor:
    """The SIGMAS of the original's scheduler for a MODEL (its model_sampling)."""
    check_choice(schedule, SCHEDULES, "schedule")
    if steps < 1:
        raise TryOnInputError("steps: must be at least 1.")
    model_sampling = model.get_model_object("model_sampling")
    if schedule == "ddim" and steps >= len(model_sampling.sigmas):
        raise TryOnInputError(
            f"steps: the ddim schedule takes at most {len(model_sampling.sigmas) - 1} steps (its leading timesteps, shifted "
            f"by 1 as the original's, would pass t={len(model_sampling.sigmas) - 1}). Use fewer steps or the karras schedule."
        )
    return karras_sigmas(model_sampling, steps) if schedule == "karras" else ddim_sigmas(model_sampling, steps)


# ----------------------------------------------------------------------------------------------
# Steppers (VE sigmas, x0 predictions)
# ----------------------------------------------------------------------------------------------
class DDIMStep:
    """DDIM eta 0 = Euler on VE sigmas: x_next = x0 + sigma_next * eps."""

    def __init__(self, sigmas: torch.Tensor):
        self.sigmas = [float(s) for s in sigmas]

    def __call__(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        return denoised + (x - denoised) * (sigma_next / sigma)


def _unipc_coefficients(h: float, order: int) -> tuple[float, float, list[float]]:
    """(h_phi_1, B(h), b) of UniPC bh2 predicting x0 (hh = -h), b of length `order`."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial, b = 1, []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, b


class UniPCStep:
    """UniPC bh2 predicting x0, corrector on, lower order at the last step, `order` 2 (the original's), on VE sigmas.

    Each call gets the model's x0 prediction at the sample it was given (the repainted one): the corrector first
    refines the previous step's stored sample with it, then the predictor moves to the next sigma. The corrector
    starts from the stored sample, so a repaint reaches the next model call, not the trajectory (as the original).
    """

    def __init__(self, sigmas: torch.Tensor, order: int = SOLVER_ORDER):
        self.sigmas = [float(s) for s in sigmas]
        self.lambdas = [-math.log(s) if s > 0 else math.inf for s in self.sigmas]
        self.steps = len(self.sigmas) - 1
        self.order = order
        self.x0s: list[torch.Tensor] = []  # latest last
        self.last_sample: torch.Tensor | None = None
        self.this_order = 1
        self.lower_order_nums = 0

    def _corrector(self, i: int, model_t: torch.Tensor) -> torch.Tensor:
        order = self.this_order
        m0, x = self.x0s[-1], self.last_sample
        sigma_t, sigma_s0 = self.sigmas[i], self.sigmas[i - 1]
        h = self.lambdas[i] - self.lambdas[i - 1]
        rks, d1s = [], []
        for k in range(1, order):
            rk = (self.lambdas[i - 1 - k] - self.lambdas[i - 1]) / h
            rks.append(rk)
            d1s.append((self.x0s[-(k + 1)] - m0) / rk)
        rks.append(1.0)
        h_phi_1, b_h, b = _unipc_coefficients(h, order)
        if order == 1:
            rhos = [0.5]
        else:
            matrix = torch.tensor([[rk ** (row) for rk in rks] for row in range(order)], dtype=torch.float64)
            rhos = torch.linalg.solve(matrix, torch.tensor(b, dtype=torch.float64)).tolist()
        correction = sum((rho * d1 for rho, d1 in zip(rhos[:-1], d1s, strict=True)), torch.zeros_like(m0)) + rhos[-1] * (model_t - m0)
        return (sigma_t / sigma_s0) * x - h_phi_1 * m0 - b_h * correction

    def _predictor(self, i: int, x: torch.Tensor, order: int) -> torch.Tensor:
        m0 = self.x0s[-1]
        sigma_t, sigma_s0 = self.sigmas[i + 1], self.sigmas[i]
        h = self.lambdas[i + 1] - self.lambdas[i]
        if h == 0:  # the repeated last sigma: the predictor returns its input
            return x
        if math.isinf(h):  # a final sigma of 0 (another scheduler's sigmas): x0 itself
            return m0
        h_phi_1, b_h, _ = _unipc_coefficients(h, order)
        out = (sigma_t / sigma_s0) * x - h_phi_1 * m0
        if order == 2:
            rk = (self.lambdas[i - 1] - self.lambdas[i]) / h
            out = out - b_h * 0.5 * ((self.x0s[-2] - m0) / rk)
        return out

    def __call__(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        if i > 0 and self.last_sample is not None:
            x = self._corrector(i, denoised)
        self.x0s = (self.x0s + [denoised])[-self.order :]
        this_order = min(self.order, self.steps - i, self.lower_order_nums + 1)
        self.this_order = this_order
        self.last_sample = x
        out = self._predictor(i, x, this_order)
        self.lower_order_nums = min(self.lower_order_nums + 1, self.order)
        return out


# ----------------------------------------------------------------------------------------------
# The sampler function (KSAMPLER)
# ----------------------------------------------------------------------------------------------
def _vp_scale(sigma: float) -> float:
    """alpha = 1 / sqrt(1 + sigma^2): VE x -> the original's VP latent."""
    return 1.0 / math.sqrt(1.0 + sigma * sigma)


@torch.no_grad()
def sample_ootd(model, x, sigmas, extra_args=None, callback=None, disable=None, mode: str = "unipc"):
    """ComfyUI sampler function: the original's scheduler (`mode` unipc / ddim) and, with a latent noise_mask, its repaint.

    `model` is KSAMPLER's KSamplerX0Inpaint: its `inner_model` is the CFG model, called directly here so that the
    repaint is the original's (none before the first step, the next step's noise level after each step). With a mask
    and noise (SamplerCustom's add_noise on) the run starts from pure noise, as the original; without noise it
    continues the given latent. A run that ends the schedule (last sigma sigma_min, or 0) returns the original's
    final latent: VP at the last sigma inside the mask, the clean original latent outside.
    """
    check_choice(mode, MODES, "mode")
    extra_args = {} if extra_args is None else dict(extra_args)
    mask = extra_args.pop("denoise_mask", None)
    steps = len(sigmas) - 1
    if steps < 1:
        return x
    guided = model.inner_model  # the CFG model, without KSamplerX0Inpaint's own blending
    original, noise = model.latent_image, model.noise
    model_sampling = guided.inner_model.model_sampling
    repaint = mask is not None
    if repaint and bool(torch.any(noise != 0)):  # the original's initial latent: pure noise (VP), no image
        x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    ends_schedule = float(sigmas[-1]) <= float(model_sampling.sigma_min) * (1 + 1e-4)
    step = UniPCStep(sigmas) if mode == "unipc" else DDIMStep(sigmas)
    s_in = x.new_ones([x.shape[0]])
    for i in range(steps):
        denoised = guided(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = step(i, x, denoised)
        if repaint and (i < steps - 1 or not ends_schedule):
            x = mask * x + (1 - mask) * (original + noise * sigmas[i + 1])
    if ends_schedule:
        x = x * _vp_scale(float(sigmas[-1]))
        if repaint:
            x = mask * x + (1 - mask) * original
    return x


def ootd_sampler(mode: str = "unipc") -> comfy.samplers.KSAMPLER:
    """The SAMPLER for SamplerCustom / SamplerCustomAdvanced."""
    check_choice(mode, MODES, "mode")
    return comfy.samplers.KSAMPLER(sample_ootd, extra_options={"mode": mode})
