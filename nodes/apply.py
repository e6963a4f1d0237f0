"""The IDM-VTON apply node: prepares every input and patches TryonNet for any sampler."""

from __future__ import annotations

from ..attention.tryon_patch import FEATURE_CACHE
from ..pipeline.idm_vton_apply import apply_idm_vton

GARMENT_FEATURE_CACHE_TOOLTIP = (
    "Approximate speed-up, off by default. 'off' runs GarmentNet every step (exact, as the original). 'first_step' / "
    "'mid_schedule' run it once per sampling run, at the first or the middle step's timestep, and reuse its features. "
    "Measured (bench/, CPU, real depths at reduced width, 4 steps): per step 0.69x / 0.71x of the exact mode "
    "(0.55x / 0.56x of the original's), so about 30% faster. Deviation from the exact result on random test weights: "
    "first_step ~3e-7 relative on the final latent (random weights are dominated by the first step, so this understates it), "
    "mid_schedule 40% relative, mean 0.08 on the decoded [0,1] image. Not yet measured on real weights: check your images."
)


class IDMVTONApply:
    DESCRIPTION = (
        "Prepares IDM-VTON: binarises the mask, masks the person, VAE-encodes person/DensePose/garment, "
        "computes IP-Adapter tokens and installs GarmentNet reference attention. Feed its outputs to any KSampler."
    )
    CATEGORY = "try-on/IDM-VTON"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("model", "positive", "negative", "latent")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tryon_model": ("MODEL", {"tooltip": "TryonNet from 'IDM-VTON TryonNet Loader'."}),
                "garment_model": ("MODEL", {"tooltip": "GarmentNet: an SDXL base 1.0 checkpoint's MODEL, or 'IDM-VTON GarmentNet Loader'."}),
                "garment_conditioning": ("CONDITIONING", {"tooltip": 'CLIPTextEncode of "a photo of <garment description>" (no CFG).'}),
                "vae": ("VAE", {"tooltip": "The SDXL VAE (sdxl-vae-fp16-fix or your checkpoint's)."}),
                "person_image": ("IMAGE", {"tooltip": "The person photo; 768x1024 (3:4) is what IDM-VTON was trained on. Sides are rounded down to /8."}),
                "mask": ("MASK", {"tooltip": "Area to repaint (1 = repaint), binarised at 0.5; resized to the person with nearest."}),
                "densepose_image": ("IMAGE", {"tooltip": "DensePose rendering (Parula on black), resized to the person."}),
                "garment_image": ("IMAGE", {"tooltip": "The garment photo, ideally a flat-lay on white, 3:4."}),
                "clip_vision": ("CLIP_VISION", {"tooltip": "CLIP-ViT-H-14-laion2B (the IP-Adapter image encoder)."}),
                "positive": ("CONDITIONING", {"tooltip": 'CLIPTextEncode of "model is wearing <garment description>".'}),
                "negative": ("CONDITIONING", {"tooltip": 'CLIPTextEncode of "monochrome, lowres, bad anatomy, worst quality, low quality".'}),
            },
            "optional": {
                "ip_adapter_strength": (
                    "FLOAT",
                    {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05, "tooltip": "Scale of the garment image's IP-Adapter attention (original: 1.0)."},
                ),
                "garment_strength": (
                    "FLOAT",
                    {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05, "tooltip": "Scale of the GarmentNet reference features (original: 1.0)."},
                ),
                "garment_feature_cache": (list(FEATURE_CACHE), {"default": "off", "tooltip": GARMENT_FEATURE_CACHE_TOOLTIP}),
            },
        }

    def apply(
        self,
        tryon_model,
        garment_model,
        garment_conditioning,
        vae,
        person_image,
        mask,
        densepose_image,
        garment_image,
        clip_vision,
        positive,
        negative,
        ip_adapter_strength=1.0,
        garment_strength=1.0,
        garment_feature_cache="off",
    ):
        result = apply_idm_vton(
            tryon_model,
            garment_model,
            garment_conditioning,
            vae,
            person_image,
            mask,
            densepose_image,
            garment_image,
            clip_vision,
            positive,
            negative,
            ip_adapter_strength,
            garment_strength,
            garment_feature_cache,
        )
        return (result.model, result.positive, result.negative, result.latent)


NODES = {"IDMVTONApply": (IDMVTONApply, "IDM-VTON Apply")}
