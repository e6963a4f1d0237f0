"""Installs IDM-VTON's garment reference attention and IP-Adapter on a TryonNet ModelPatcher.

GarmentNet runs once per sampling step (CALC_COND_BATCH scope), lazily on the first TryonNet call
of the step, at that call's timestep; its features are freed at the end of the step.
With the (approximate, opt-in) garment feature cache it runs once per sampling run (OUTER_SAMPLE scope)
at one timestep of the schedule, and the features are reused by every step.
"""

from __future__ import annotations

import logging

import comfy.patcher_extension
import torch

from .garment_features import FeatureKey, garment_features, transformer_block_widths, transformer_blocks
from .ip_attention import IPAttentionReplace, ip_tokens_for_chunks
from .reference_attention import ReferenceAttentionPatch, ReferenceAttentionReplace

WRAPPER_KEY = "idm_vton_tryon"
# How the uncond half's M zero garment tokens are attended: "single_key" = one key with logit bias log(M)
# (attn1 replace, exact); "materialised" = M zero tokens concatenated (attn1 patch, the original's way).
UNCOND_KEYS = ("single_key", "materialised")
# Garment feature cache: which step's timestep GarmentNet runs at, once per sampling run ("off": every step, exact).
FEATURE_CACHE = ("off", "first_step", "mid_schedule")


class TryOnState:
    """Everything one patched MODEL needs at sampling time; shared (not copied) by ModelPatcher clones."""

    def __init__(
        self,
        garment_net,
        garment_latent: torch.Tensor,
        garment_context: torch.Tensor,
        ip_cond: torch.Tensor,
        ip_uncond: torch.Tensor,
        ip_layers: torch.nn.ModuleDict,
        wanted: list[FeatureKey],
        ip_strength: float = 1.0,
        garment_strength: float = 1.0,
        feature_cache: str = "off",
        uncond_keys: str = "single_key",
    ):
        if feature_cache not in FEATURE_CACHE:
            raise ValueError(f"feature_cache must be one of {FEATURE_CACHE}, not {feature_cache!r}")
        if uncond_keys not in UNCOND_KEYS:
            raise ValueError(f"uncond_keys must be one of {UNCOND_KEYS}, not {uncond_keys!r}")
        self.garment_net = garment_net
        self.garment_latent = garment_latent
        self.garment_context = garment_context
        self.ip_cond = ip_cond
        self.ip_uncond = ip_uncond
        self.ip_layers = ip_layers
        self.wanted = wanted
        self.ip_strength = ip_strength
        self.garment_strength = garment_strength
        self.feature_cache = feature_cache
        self.uncond_keys = uncond_keys
        self.cache_timestep: float | None = None  # set for one sampling run when the feature cache is on
        self.bank: dict[FeatureKey, torch.Tensor] = {}
        self.bank_timestep: float | None = None
        self.step_depth = 0
        self.garment_passes = 0  # GarmentNet forward passes run so far (for tests and benchmarks)
        self.displacement_checked = False

    # --- what the patches read ---------------------------------------------------------------
    def features_for(self, key: FeatureKey) -> torch.Tensor | None:
        return self.bank.get(key)

    def ip_tokens(self, cond_or_uncond: list[int], batch: int, like: torch.Tensor) -> torch.Tensor:
        tokens = ip_tokens_for_chunks(self.ip_cond, self.ip_uncond, cond_or_uncond, batch)
        return tokens.to(device=like.device, dtype=like.dtype)

    # --- model management -------------------------------------------------------------------
    def models(self):
        return [self.garment_net]

    def to(self, device_or_dtype):
        if isinstance(device_or_dtype, (torch.device, str)):
            self.ip_cond = self.ip_cond.to(device_or_dtype)
            self.ip_uncond = self.ip_uncond.to(device_or_dtype)
            self.garment_latent = self.garment_latent.to(device_or_dtype)
            self.garment_context = self.garment_context.to(device_or_dtype)
        return self

    def __deepcopy__(self, memo):
        return self

    # --- the feature bank -------------------------------------------------------------------
    def ensure_features(self, timesteps: torch.Tensor, device: torch.device) -> None:
        timestep = float(timesteps.reshape(-1)[0]) if self.cache_timestep is None else self.cache_timestep
        if self.bank and self.bank_timestep == timestep:
            return
        base = self.garment_net.model
        dtype = base.manual_cast_dtype or base.get_dtype()
        latent = self.garment_latent.to(device=device, dtype=dtype)
        context = self.garment_context.to(device=device, dtype=dtype)
        if context.shape[0] != latent.shape[0]:
            context = context.expand(latent.shape[0], *context.shape[1:])
        t = torch.full((latent.shape[0],), timestep, device=device, dtype=torch.float32)
        self.bank = garment_features(base.diffusion_model, latent, t, context, self.wanted)
        self.bank_timestep = timestep
        self.garment_passes += 1

    def release(self) -> None:
        self.bank = {}
        self.bank_timestep = None

    def release_after_step(self) -> None:
        if self.cache_timestep is None:
            self.release()

    # --- ComfyUI wrappers -------------------------------------------------------------------
    def outer_sample_wrapper(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        """OUTER_SAMPLE: one sampling run; with the feature cache, fixes the timestep GarmentNet runs at."""
        if self.feature_cache == "off":
            return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        model_sampling = executor.class_obj.model_patcher.get_model_object("model_sampling")
        self.cache_timestep = cache_timestep(model_sampling, sigmas, self.feature_cache)
        self.release()
        try:
            return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            self.cache_timestep = None
            self.release()

    def step_wrapper(self, executor, model, conds, x_in, timestep, model_options):
        """CALC_COND_BATCH: one sampling step, whatever the cond/uncond chunking."""
        self.step_depth += 1
        try:
            return executor(model, conds, x_in, timestep, model_options)
        finally:
            self.step_depth -= 1
            if self.step_depth == 0:
                self.release_after_step()

    def diffusion_model_wrapper(self, executor, x, timesteps, *args, **kwargs):
        """DIFFUSION_MODEL: make sure this step's garment features exist before TryonNet runs."""
        self.warn_if_displaced(kwargs.get("transformer_options", args[3] if len(args) > 3 else {}))
        with torch.no_grad():
            self.ensure_features(timesteps, x.device)
        try:
            return executor(x, timesteps, *args, **kwargs)
        finally:
            if self.step_depth == 0:
                self.release_after_step()

    def warn_if_displaced(self, transformer_options: dict) -> None:
        """Once per state: says so when a node after the apply node replaced our attn1 replaces (features lost there)."""
        if self.uncond_keys != "single_key" or self.displacement_checked:
            return
        self.displacement_checked = True
        replaces = transformer_options.get("patches_replace", {}).get("attn1", {})
        displaced = [key for key in self.wanted if not (isinstance(replaces.get(key), ReferenceAttentionReplace) and replaces[key].state is self)]
        if displaced:
            logging.warning(
                "IDM-VTON: a node placed after 'IDM-VTON Apply' replaced the self-attention of %d of its %d blocks "
                "(e.g. %s), so those blocks do not see the garment. Put that node before 'IDM-VTON Apply': "
                "the apply node then keeps it and adds the garment features on top.",
                len(displaced),
                len(self.wanted),
                displaced[0],
            )


def cache_timestep(model_sampling, sigmas: torch.Tensor, mode: str) -> float:
    """The timestep of the schedule's first or middle step, at which the cached garment features are computed."""
    steps = max(int((sigmas > 0).sum()), 1)
    index = 0 if mode == "first_step" else steps // 2
    return float(model_sampling.timestep(sigmas[index].reshape(1)).reshape(-1)[0])


def patch_tryon_model(tryon_model, state: TryOnState):
    """A clone of `tryon_model` with reference attention on the 70 attn1, 70 IP attn2 replaces and wrappers."""
    model = tryon_model.clone()
    existing = tryon_model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    if state.uncond_keys == "single_key" and any(key in existing for key in state.wanted):
        # another node's attn1 replace is already there: the attn1 patch path extends its keys/values instead of taking its slot
        logging.info("IDM-VTON Apply: the model already has self-attention replaces (another node); using materialised zero tokens so both apply.")
        state.uncond_keys = "materialised"
    if state.uncond_keys == "materialised":
        model.set_model_attn1_patch(ReferenceAttentionPatch(state))
    else:
        blocks = transformer_blocks(tryon_model.model.diffusion_model)
        for key in state.wanted:
            model.set_model_attn1_replace(ReferenceAttentionReplace(state, key, blocks[key].attn1), *key)
    for name in state.ip_layers.keys():
        block_name, number, index = name.rsplit("_", 2)
        model.set_model_attn2_replace(IPAttentionReplace(state, name), block_name, int(number), int(index))
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, state.outer_sample_wrapper)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, state.step_wrapper)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, state.diffusion_model_wrapper)
    return model


def wanted_feature_keys(tryon_model) -> list[FeatureKey]:
    """The transformer blocks of TryonNet that receive garment features (all of them)."""
    return list(transformer_block_widths(tryon_model.model.diffusion_model))
