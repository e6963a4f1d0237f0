"""Installs IDM-VTON's garment reference attention and IP-Adapter on a TryonNet ModelPatcher.

GarmentNet runs once per sampling step (CALC_COND_BATCH scope), lazily on the first TryonNet call
of the step, at that call's timestep; its features are freed at the end of the step.
"""

from __future__ import annotations

import comfy.patcher_extension
import torch

from .garment_features import FeatureKey, garment_features, transformer_block_widths
from .ip_attention import IPAttentionReplace, ip_tokens_for_chunks
from .reference_attention import ReferenceAttentionPatch

WRAPPER_KEY = "idm_vton_tryon"


class TryOnState:
    """Everything one patched MODEL needs at sampling time; shared (not copied) by ModelPatcher clones."""

    def __init__(self, garment_net, garment_latent: torch.Tensor, garment_context: torch.Tensor,
                 ip_cond: torch.Tensor, ip_uncond: torch.Tensor, ip_layers: torch.nn.ModuleDict,
                 wanted: list[FeatureKey], ip_strength: float = 1.0, garment_strength: float = 1.0):
        self.garment_net = garment_net
        self.garment_latent = garment_latent
        self.garment_context = garment_context
        self.ip_cond = ip_cond
        self.ip_uncond = ip_uncond
        self.ip_layers = ip_layers
        self.wanted = wanted
        self.ip_strength = ip_strength
        self.garment_strength = garment_strength
        self.bank: dict[FeatureKey, torch.Tensor] = {}
        self.bank_timestep: float | None = None
        self.step_depth = 0
        self.garment_passes = 0  # GarmentNet forward passes run so far (for tests and benchmarks)

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
        timestep = float(timesteps.reshape(-1)[0])
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

    # --- ComfyUI wrappers -------------------------------------------------------------------
    def step_wrapper(self, executor, model, conds, x_in, timestep, model_options):
        """CALC_COND_BATCH: one sampling step, whatever the cond/uncond chunking."""
        self.step_depth += 1
        try:
            return executor(model, conds, x_in, timestep, model_options)
        finally:
            self.step_depth -= 1
            if self.step_depth == 0:
                self.release()

    def diffusion_model_wrapper(self, executor, x, timesteps, *args, **kwargs):
        """DIFFUSION_MODEL: make sure this step's garment features exist before TryonNet runs."""
        with torch.no_grad():
            self.ensure_features(timesteps, x.device)
        try:
            return executor(x, timesteps, *args, **kwargs)
        finally:
            if self.step_depth == 0:
                self.release()


def patch_tryon_model(tryon_model, state: TryOnState):
    """A clone of `tryon_model` with the reference-attention attn1 patch, 70 IP attn2 replaces and wrappers."""
    model = tryon_model.clone()
    model.set_model_attn1_patch(ReferenceAttentionPatch(state))
    for name in state.ip_layers.keys():
        block_name, number, index = name.rsplit("_", 2)
        model.set_model_attn2_replace(IPAttentionReplace(state, name), block_name, int(number), int(index))
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, state.step_wrapper)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, state.diffusion_model_wrapper)
    return model


def wanted_feature_keys(tryon_model) -> list[FeatureKey]:
    """The transformer blocks of TryonNet that receive garment features (all of them)."""
    return list(transformer_block_widths(tryon_model.model.diffusion_model))
