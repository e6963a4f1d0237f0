"""IDM-VTON on the reference-attention core: its data (`TryOnState`) and the patches that install it on TryonNet.

IDM-VTON's parameters of the core (docs/idm_vton.md, "GarmentNet and reference attention"): all 70 transformer blocks,
GarmentNet's own norm1 outputs, zero tokens for the unconditional half, GarmentNet run at every step at the step's
timestep. The (approximate, opt-in) garment feature cache runs it once per sampling run instead, at the first or
the middle step's timestep. IP-Adapter attention (attn2) is IDM-VTON's own addition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..preprocess.labels import check_choice
from .garment_features import transformer_block_widths
from .ip_attention import IPAdapterTokens, IPAttentionReplace
from .reference_bank import Attn1Hook, ReferenceFeatureBank, install_reference_attention, reference_bank_of
from .reference_spec import CapturePoint, EveryStep, FeatureKey, OncePerRun, ReferenceInputs, ReferenceSpec, UncondReference

WRAPPER_KEY = "idm_vton_tryon"
NODE_NAME = "IDM-VTON Apply"
# How the uncond half's M zero garment tokens are attended: "single_key" = one key with logit bias log(M)
# (attn1 replace, exact); "materialised" = M zero tokens concatenated (attn1 patch, the original's way).
UNCOND_KEYS = ("single_key", "materialised")
# Garment feature cache: which step's timestep GarmentNet runs at, once per sampling run ("off": every step, exact).
FEATURE_CACHE = ("off", "first_step", "mid_schedule")


@dataclass(frozen=True, eq=False)
class TryOnState:
    """Everything one patched TryonNet needs at sampling time; immutable after the apply node, shared by clones.

    The options are checked here, once. What changes during sampling lives in the `ReferenceFeatureBank`.
    """

    garment_net: object  # ModelPatcher of GarmentNet
    garment_latent: torch.Tensor  # (1 or B, 4, h, w), scaled
    garment_context: torch.Tensor  # (1 or B, 77, 2048): "a photo of <description>"
    ip_cond: torch.Tensor  # (1 or B, 16, 2048)
    ip_uncond: torch.Tensor  # (1, 16, 2048): the Resampler on zero pixel values
    ip_layers: torch.nn.ModuleDict  # to_k_ip / to_v_ip per cross-attention, named "<block>_<number>_<index>"
    wanted: tuple[FeatureKey, ...]  # the transformer blocks that receive garment features (all of TryonNet's)
    ip_strength: float = 1.0
    garment_strength: float = 1.0
    feature_cache: str = "off"
    uncond_keys: str = "single_key"

    def __post_init__(self):
        object.__setattr__(self, "wanted", tuple(tuple(key) for key in self.wanted))
        check_choice(self.feature_cache, FEATURE_CACHE, "garment_feature_cache")
        check_choice(self.uncond_keys, UNCOND_KEYS, "uncond_keys")

    def reference_spec(self) -> ReferenceSpec:
        timing = EveryStep() if self.feature_cache == "off" else OncePerRun(schedule_step=self.feature_cache)
        return ReferenceSpec(self.wanted, CapturePoint.NORM1_OUTPUT, UncondReference.ZERO_TOKENS, timing, self.garment_strength)

    def reference_inputs(self) -> ReferenceInputs:
        return ReferenceInputs(self.garment_net, self.garment_latent, self.garment_context)


def patch_tryon_model(tryon_model, state: TryOnState):
    """A clone of `tryon_model` with reference attention on the 70 attn1, 70 IP attn2 replaces and the core's wrappers."""
    model = tryon_model.clone()
    hook = Attn1Hook.REPLACE if state.uncond_keys == "single_key" else Attn1Hook.PATCH
    bank = install_reference_attention(model, state.reference_spec(), state.reference_inputs(), wrapper_key=WRAPPER_KEY, node_name=NODE_NAME, attn1_hook=hook)
    tokens = IPAdapterTokens(state.ip_cond, state.ip_uncond)
    for name, layer in state.ip_layers.items():
        block_name, number, index = name.rsplit("_", 2)
        model.set_model_attn2_replace(IPAttentionReplace(bank, tokens, layer, state.ip_strength), block_name, int(number), int(index))
    return model


def tryon_bank(model) -> ReferenceFeatureBank | None:
    """The garment feature bank of a MODEL patched by `patch_tryon_model` (or of a clone of it)."""
    return reference_bank_of(model, WRAPPER_KEY)


def wanted_feature_keys(tryon_model) -> list[FeatureKey]:
    """The transformer blocks of TryonNet that receive garment features (all of them)."""
    return list(transformer_block_widths(tryon_model.model.diffusion_model))
