"""The reference-attention core: the feature bank of one patched MODEL, its scope, and installing it on a ModelPatcher.

A family describes itself with a `ReferenceSpec` and `ReferenceInputs` (reference_spec.py); `install_reference_attention`
puts the attn1 hooks and three wrappers on a ModelPatcher and returns the `ReferenceFeatureBank`, the only mutable
part (docs/idm_vton.md, "ComfyUI hooks"):

- `DIFFUSION_MODEL` fills the bank before the denoiser runs, lazily, at the step's timestep or the run's fixed one;
- `CALC_COND_BATCH` scopes one model evaluation (however ComfyUI chunks cond and uncond), freeing per-step features;
- `OUTER_SAMPLE` scopes one sampling run: fixes a once-per-run timestep and frees everything at the end.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from dataclasses import dataclass

import comfy.patcher_extension
import torch

from .garment_features import garment_features, transformer_blocks
from .reference_attention import ReferenceAttentionPatch, ReferenceAttentionReplace, expand_to_batch
from .reference_spec import CapturePoint, FeatureKey, OncePerRun, ReferenceInputs, ReferenceSpec, UncondReference


class Attn1Hook(str, enum.Enum):
    """How reference attention enters the denoiser's attn1."""

    REPLACE = "replace"  # one attn1 replace per block: reference keys projected once per call, zero tokens as one biased key
    PATCH = "patch"  # one attn1_patch: reference tokens concatenated before the projections (on top of another node's replace)


@dataclass(frozen=True, eq=False)
class ReferenceFeatures:
    """One block's reference tokens: `cond` for cond chunks; `uncond` for uncond chunks, None meaning zero tokens."""

    cond: torch.Tensor  # (1 or B, M, C)
    uncond: torch.Tensor | None


class ReferenceFeatureBank:
    """The per-run mutable part of one patched MODEL: the features, their timestep and scope, the reference passes.

    ModelPatcher clones share it (their wrappers and patches point here); ComfyUI runs one sampling at a time.
    """

    def __init__(self, spec: ReferenceSpec, inputs: ReferenceInputs, target_blocks: dict[FeatureKey, torch.nn.Module], attn1_hook: Attn1Hook, node_name: str):
        self.spec = spec
        self.inputs = inputs
        self.target_blocks = target_blocks
        self.attn1_hook = Attn1Hook(attn1_hook)
        self.node_name = node_name
        self.features: dict[FeatureKey, ReferenceFeatures] = {}
        self.features_timestep: float | None = None
        self.run_timestep: float | None = None  # set for one sampling run when the timing is once per run
        self.step_depth = 0
        self.reference_passes = 0  # reference UNet forward passes so far (for tests and benchmarks)
        self.displacement_checked = False

    # --- what the patches read --------------------------------------------------------------------------
    def features_for(self, key: FeatureKey) -> ReferenceFeatures | None:
        return self.features.get(key)

    def models(self):
        return [self.inputs.model]

    def live_state(self) -> dict:
        """What is held between runs (all zero when idle): feature tensors, open steps, a pending run timestep."""
        return {"feature_tensors": len(self.features), "step_depth": self.step_depth, "run_timestep_set": self.run_timestep is not None}

    # --- filling and freeing ------------------------------------------------------------------------------
    def timestep_for_call(self, timesteps: torch.Tensor) -> float:
        if self.run_timestep is not None:
            return self.run_timestep
        timing = self.spec.timing
        if isinstance(timing, OncePerRun) and timing.timestep is not None:
            return float(timing.timestep)
        return float(timesteps.reshape(-1)[0])

    def ensure_features(self, timesteps: torch.Tensor, like: torch.Tensor) -> None:
        """Fills the bank for this call's timestep unless it already holds it. `like`: the denoiser's input (device, dtype)."""
        timestep = self.timestep_for_call(timesteps)
        if self.features and self.features_timestep == timestep:
            return
        self.features = self.compute_features(timestep, like)
        self.features_timestep = timestep
        self.reference_passes += 1

    def compute_features(self, timestep: float, like: torch.Tensor) -> dict[FeatureKey, ReferenceFeatures]:
        base = self.inputs.model.model
        dtype = base.manual_cast_dtype or base.get_dtype()
        latent = self.inputs.latent.to(device=like.device, dtype=dtype)
        own_context = self.inputs.context.to(device=like.device, dtype=dtype)
        context = expand_to_batch(own_context, latent.shape[0], "reference context")
        cond_batch = latent.shape[0]
        with_zero_latent = self.spec.uncond == UncondReference.FEATURES_OF_ZERO_LATENT
        if with_zero_latent:  # one pass for both: [latent | all-zero latents], each zero latent with a pair's own context
            # (one context: one zero latent serves every pair; B contexts, e.g. B garments: B zero latents)
            latent = torch.cat([latent, latent.new_zeros(own_context.shape[0], *latent.shape[1:])])
            context = torch.cat([context, own_context])
        t = torch.full((latent.shape[0],), timestep, device=like.device, dtype=torch.float32)
        captured = garment_features(base.diffusion_model, latent, t, context, list(self.spec.blocks), self.spec.capture)
        features = {}
        for key, tensor in captured.items():
            if self.spec.capture == CapturePoint.BLOCK_INPUT:  # normalised once here by the denoiser's own norm1
                tensor = self.target_blocks[key].norm1(tensor.to(like.dtype))
            features[key] = ReferenceFeatures(tensor[:cond_batch], tensor[cond_batch:] if with_zero_latent else None)
        return features

    def release(self) -> None:
        self.features = {}
        self.features_timestep = None

    def release_after_step(self) -> None:
        if self.run_timestep is None:
            self.release()

    @contextlib.contextmanager
    def held_step(self):
        """One model evaluation whose features must outlive its forward pass, e.g. a training step (forward, then a
        backward that may recompute checkpointed blocks, which read the features again). Inside it the wrappers keep
        the features; they are freed when it ends, as at the end of a sampling step."""
        self.step_depth += 1
        try:
            yield self
        finally:
            self.step_depth -= 1
            if self.step_depth == 0:
                self.release_after_step()

    # --- ComfyUI wrappers ----------------------------------------------------------------------------------
    def outer_sample_wrapper(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        """OUTER_SAMPLE: one sampling run; a once-per-run timing fixes its timestep here."""
        model_sampling = executor.class_obj.model_patcher.get_model_object("model_sampling")
        self.run_timestep = self.spec.timing.run_timestep(model_sampling, sigmas)
        self.release()
        try:
            return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            self.run_timestep = None
            self.release()

    def step_wrapper(self, executor, model, conds, x_in, timestep, model_options):
        """CALC_COND_BATCH: one model evaluation, whatever the cond/uncond chunking."""
        with self.held_step():
            return executor(model, conds, x_in, timestep, model_options)

    def diffusion_model_wrapper(self, executor, x, timesteps, *args, **kwargs):
        """DIFFUSION_MODEL: makes sure the features of this call exist before the denoiser runs."""
        self.warn_if_displaced(kwargs.get("transformer_options", args[3] if len(args) > 3 else {}))
        with torch.no_grad():
            self.ensure_features(timesteps, x)
        try:
            return executor(x, timesteps, *args, **kwargs)
        finally:
            if self.step_depth == 0:
                self.release_after_step()

    def warn_if_displaced(self, transformer_options: dict) -> None:
        """Once per bank: says so when a node after the apply node replaced our attn1 replaces (features lost there)."""
        if self.attn1_hook != Attn1Hook.REPLACE or self.displacement_checked:
            return
        self.displacement_checked = True
        replaces = transformer_options.get("patches_replace", {}).get("attn1", {})
        displaced = [key for key in self.spec.blocks if not (isinstance(replaces.get(key), ReferenceAttentionReplace) and replaces[key].bank is self)]
        if displaced:
            logging.warning(
                "'%s': a node placed after it replaced the self-attention of %d of its %d blocks (e.g. %s), so those "
                "blocks do not see the garment. Put that node before '%s': the apply node then keeps it and adds the "
                "garment features on top.",
                self.node_name,
                len(displaced),
                len(self.spec.blocks),
                displaced[0],
                self.node_name,
            )


def install_reference_attention(
    model, spec: ReferenceSpec, inputs: ReferenceInputs, *, wrapper_key: str, node_name: str, attn1_hook: Attn1Hook = Attn1Hook.REPLACE
) -> ReferenceFeatureBank:
    """Installs reference attention on `model` (a ModelPatcher the caller has cloned) and returns its bank.

    `wrapper_key` names the wrappers and the attachment (`reference_bank_of`); `node_name` is the apply node's display
    name for messages. When `model` already has another node's attn1 replace on one of the blocks, the PATCH hook is
    used instead of REPLACE, so both apply.
    """
    blocks = transformer_blocks(model.model.diffusion_model)
    missing = [key for key in spec.blocks if key not in blocks]
    if missing:
        raise ValueError(f"the denoiser has no transformer block for {missing[:3]}")
    hook = Attn1Hook(attn1_hook)
    existing = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    if hook == Attn1Hook.REPLACE and any(key in existing for key in spec.blocks):
        logging.info("%s: the model already has self-attention replaces (another node); extending their keys/values instead.", node_name)
        hook = Attn1Hook.PATCH
    bank = ReferenceFeatureBank(spec, inputs, {key: blocks[key] for key in spec.blocks}, hook, node_name)
    if hook == Attn1Hook.PATCH:
        model.set_model_attn1_patch(ReferenceAttentionPatch(bank))
    else:
        for key in spec.blocks:
            model.set_model_attn1_replace(ReferenceAttentionReplace(bank, key, blocks[key].attn1), *key)
    wrappers = comfy.patcher_extension.WrappersMP
    model.add_wrapper_with_key(wrappers.OUTER_SAMPLE, wrapper_key, bank.outer_sample_wrapper)
    model.add_wrapper_with_key(wrappers.CALC_COND_BATCH, wrapper_key, bank.step_wrapper)
    model.add_wrapper_with_key(wrappers.DIFFUSION_MODEL, wrapper_key, bank.diffusion_model_wrapper)
    model.set_attachments(wrapper_key, bank)
    return bank


def reference_bank_of(model, wrapper_key: str) -> ReferenceFeatureBank | None:
    """The bank installed on `model` (or a clone of it) under `wrapper_key`."""
    return model.get_attachment(wrapper_key)
