"""The whole IDM-VTON preparation behind the apply node: encodes, IP tokens, patched MODEL, conditionings.

docs/idm_vton.md: "Input preparation", "IP-Adapter", "CLIP image preprocessing".
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.clip_vision
import comfy.model_management
import node_helpers
import torch

from ..attention.garment_features import transformer_block_widths
from ..attention.reference_bank import ReferenceFeatureBank
from ..attention.tryon_patch import TryOnState, patch_tryon_model, tryon_bank, wanted_feature_keys
from ..errors import TryOnInputError
from ..models.clip_vision_encode import clip_vision_outputs
from ..preprocess.settings import check_finite
from ..preprocess.tryon_inputs import prepare_pixels, tryon_concat


@dataclass(frozen=True)
class TryOnResult:
    model: object  # the patched TryonNet ModelPatcher
    positive: list
    negative: list
    latent: dict
    state: TryOnState  # the data, immutable
    bank: ReferenceFeatureBank  # the per-run garment features (mutable; shared by clones of `model`)


def check_models(tryon_model, garment_model) -> None:
    """Clear errors when the two MODEL inputs are swapped or of the wrong kind."""
    base = getattr(tryon_model, "model", None)
    if not hasattr(base, "ip_resampler"):
        raise TryOnInputError("tryon_model: this MODEL is not an IDM-VTON TryonNet. Load it with 'IDM-VTON TryonNet Loader'.")
    unet = getattr(getattr(garment_model, "model", None), "diffusion_model", None)
    if unet is None or not hasattr(unet, "input_blocks"):
        raise TryOnInputError("garment_model: expected an SDXL UNet MODEL (SDXL base checkpoint or IDM's unet_encoder).")
    if hasattr(garment_model.model, "ip_resampler") or unet.input_blocks[0][0].in_channels != 4:
        raise TryOnInputError(
            "garment_model: this is a 13-channel TryonNet; GarmentNet is the 4-channel SDXL base UNet. "
            "Wire an SDXL base checkpoint's MODEL or the GarmentNet loader here."
        )
    tryon_widths = transformer_block_widths(base.diffusion_model)
    garment_widths = transformer_block_widths(unet)
    if any(garment_widths.get(key) != width for key, width in tryon_widths.items()):
        raise TryOnInputError(
            "garment_model: its UNet widths differ from TryonNet's. GarmentNet must be SDXL base 1.0 (or IDM's unet_encoder), not an SD1.5/other architecture."
        )


def first_context(conditioning, input_name: str) -> torch.Tensor:
    if not conditioning or not isinstance(conditioning[0][0], torch.Tensor):
        raise TryOnInputError(f"{input_name}: expected a CONDITIONING from CLIPTextEncode.")
    return conditioning[0][0]


def ip_image_tokens(tryon_model, clip_vision, garment: torch.Tensor, ip_image_preprocess: str = "original") -> tuple[torch.Tensor, torch.Tensor]:
    """IP tokens of the garment images and of zero pixel values (the unconditional tokens), once per run.

    The garment is the one the VAE sees (resized to the working size), as the original feeds its 768x1024 garment
    to both.
    """
    if clip_vision is None or not hasattr(clip_vision, "encode_image"):
        raise TryOnInputError("clip_vision: load CLIP-ViT-H-14 with the CLIPVisionLoader node.")
    resampler = tryon_model.model.ip_resampler
    expected = resampler.proj_in.weight.shape[1]
    cond_states = clip_vision_outputs(clip_vision, garment, ip_image_preprocess).penultimate_hidden_states
    if cond_states.shape[-1] != expected:
        raise TryOnInputError(
            f"clip_vision: this vision model gives {cond_states.shape[-1]}-wide features; IDM-VTON's "
            f"IP-Adapter needs {expected} (CLIP-ViT-H-14-laion2B). Pick that file in CLIPVisionLoader."
        )
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    size = clip_vision.image_size
    zeros = torch.zeros(1, 3, size, size, device=clip_vision.load_device)
    with torch.no_grad():
        uncond_states = clip_vision.model(pixel_values=zeros, intermediate_output=-2)[1]
    comfy.model_management.load_models_gpu([tryon_model])
    device = tryon_model.load_device
    dtype = tryon_model.model.manual_cast_dtype or tryon_model.model.get_dtype()
    with torch.no_grad():
        cond = resampler(cond_states.to(device=device, dtype=dtype))
        uncond = resampler(uncond_states.to(device=device, dtype=dtype))
    offload = comfy.model_management.intermediate_device()
    return cond.to(offload), uncond.to(offload)


def encode(vae, pixels: torch.Tensor, latent_format) -> torch.Tensor:
    """VAE latent multiplied by the model's scaling factor (IDM concatenates scaled latents)."""
    return latent_format.process_in(vae.encode(pixels))


def apply_idm_vton(
    tryon_model,
    garment_model,
    garment_conditioning,
    vae,
    person,
    mask,
    densepose,
    garment,
    clip_vision,
    positive,
    negative,
    ip_adapter_strength: float = 1.0,
    garment_strength: float = 1.0,
    garment_feature_cache: str = "off",
    uncond_keys: str = "single_key",
    ip_image_preprocess: str = "original",
) -> TryOnResult:
    """Everything the apply node outputs. `ip_image_preprocess` is checked by clip_vision_outputs (before the VAE runs),
    `garment_feature_cache` and `uncond_keys` by TryOnState."""
    check_finite(ip_adapter_strength=ip_adapter_strength, garment_strength=garment_strength)
    check_models(tryon_model, garment_model)
    if vae is None or not hasattr(vae, "encode"):
        raise TryOnInputError("vae: connect the SDXL checkpoint's VAE.")
    garment_context = first_context(garment_conditioning, "garment_conditioning")
    first_context(positive, "positive")
    first_context(negative, "negative")
    pixels = prepare_pixels(person, mask, densepose, garment)
    ip_cond, ip_uncond = ip_image_tokens(tryon_model, clip_vision, pixels.garment, ip_image_preprocess)  # before the VAE: a wrong vision model fails fast
    latent_format = tryon_model.model.latent_format
    masked_latent = encode(vae, pixels.masked_person, latent_format)
    densepose_latent = encode(vae, pixels.densepose, latent_format)
    garment_latent = encode(vae, pixels.garment, latent_format)
    concat = tryon_concat(pixels.mask, masked_latent, densepose_latent)
    state = TryOnState(
        garment_net=garment_model,
        garment_latent=garment_latent,
        garment_context=garment_context,
        ip_cond=ip_cond,
        ip_uncond=ip_uncond,
        ip_layers=tryon_model.model.ip_adapter,
        wanted=wanted_feature_keys(tryon_model),
        ip_strength=ip_adapter_strength,
        garment_strength=garment_strength,
        feature_cache=garment_feature_cache,
        uncond_keys=uncond_keys,
    )
    batch, height, width = pixels.person.shape[:3]
    values = {"tryon_concat": concat, "width": width, "height": height, "crop_w": 0, "crop_h": 0, "target_width": width, "target_height": height}
    latent = {"samples": torch.zeros(batch, 4, height // 8, width // 8)}
    model = patch_tryon_model(tryon_model, state)
    return TryOnResult(
        model,
        node_helpers.conditioning_set_values(positive, values),
        node_helpers.conditioning_set_values(negative, values),
        latent,
        state,
        tryon_bank(model),
    )
