"""The IDM-VTON apply node: prepares every input and patches TryonNet for any sampler."""

from __future__ import annotations

from comfy_api.latest import io

from ..attention.tryon_patch import FEATURE_CACHE
from ..pipeline.idm_vton_apply import apply_idm_vton
from ..preprocess.clip_image import IP_IMAGE_PREPROCESS
from .float_settings import validate_floats

GARMENT_FEATURE_CACHE_TOOLTIP = (
    "Approximate speed-up, off by default. 'off' runs GarmentNet every step (exact, as the original). 'first_step' / "
    "'mid_schedule' run it once per sampling run, at the first or the middle step's timestep, and reuse its features. "
    "Measured (bench/, CPU, real depths at reduced width, 4 steps): per step 0.69x / 0.71x of the exact mode "
    "(0.55x / 0.56x of the original's), so about 30% faster. Deviation from the exact result on random test weights: "
    "first_step ~3e-7 relative on the final latent (random weights are dominated by the first step, so this understates it), "
    "mid_schedule 40% relative, mean 0.08 on the decoded [0,1] image. Not yet measured on real weights: check your images."
)
IP_IMAGE_PREPROCESS_TOOLTIP = (
    "How the garment image is prepared for CLIP vision (the IP-Adapter tokens). 'original': the original's CLIP "
    "preprocessing (PIL bicubic resize of the shorter side to 224, centre crop 224, as transformers' CLIPImageProcessor), "
    "which reproduces IDM-VTON's IP tokens. 'comfyui': ComfyUI's own CLIP vision resize (the pack's behaviour before 0.3); "
    "its IP tokens differ by about 1.5%."
)


class IDMVTONApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IDMVTONApply",
            display_name="IDM-VTON Apply",
            category="try-on/IDM-VTON",
            description=(
                "Prepares IDM-VTON: binarises the mask, masks the person, VAE-encodes person/DensePose/garment, "
                "computes IP-Adapter tokens and installs GarmentNet reference attention. Feed its outputs to any KSampler."
            ),
            inputs=[
                io.Model.Input("tryon_model", tooltip="TryonNet from 'IDM-VTON TryonNet Loader'."),
                io.Model.Input("garment_model", tooltip="GarmentNet: an SDXL base 1.0 checkpoint's MODEL, or 'IDM-VTON GarmentNet Loader'."),
                io.Conditioning.Input("garment_conditioning", tooltip='CLIPTextEncode of "a photo of <garment description>" (no CFG).'),
                io.Vae.Input("vae", tooltip="The SDXL VAE (sdxl-vae-fp16-fix or your checkpoint's)."),
                io.Image.Input("person_image", tooltip="The person photo; 768x1024 (3:4) is what IDM-VTON was trained on. Sides are rounded down to /8."),
                io.Mask.Input("mask", tooltip="Area to repaint (1 = repaint), binarised at 0.5; resized to the person with nearest."),
                io.Image.Input("densepose_image", tooltip="DensePose rendering (Parula on black), resized to the person."),
                io.Image.Input("garment_image", tooltip="The garment photo, ideally a flat-lay on white, 3:4."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP-ViT-H-14-laion2B (the IP-Adapter image encoder)."),
                io.Conditioning.Input("positive", tooltip='CLIPTextEncode of "model is wearing <garment description>".'),
                io.Conditioning.Input("negative", tooltip='CLIPTextEncode of "monochrome, lowres, bad anatomy, worst quality, low quality".'),
                io.Float.Input(
                    "ip_adapter_strength",
                    default=1.0,
                    min=0.0,
                    max=2.0,
                    step=0.05,
                    optional=True,
                    tooltip="Scale of the garment image's IP-Adapter attention (original: 1.0).",
                ),
                io.Float.Input(
                    "garment_strength",
                    default=1.0,
                    min=0.0,
                    max=2.0,
                    step=0.05,
                    optional=True,
                    tooltip="Scale of the GarmentNet reference features (original: 1.0).",
                ),
                io.Combo.Input("garment_feature_cache", options=list(FEATURE_CACHE), default="off", optional=True, tooltip=GARMENT_FEATURE_CACHE_TOOLTIP),
                io.Combo.Input(
                    "ip_image_preprocess",
                    options=list(IP_IMAGE_PREPROCESS),
                    default="original",
                    optional=True,
                    tooltip=IP_IMAGE_PREPROCESS_TOOLTIP,
                ),
            ],
            outputs=[
                io.Model.Output(display_name="model"),
                io.Conditioning.Output(display_name="positive"),
                io.Conditioning.Output(display_name="negative"),
                io.Latent.Output(display_name="latent"),
            ],
        )

    @classmethod
    def validate_inputs(cls, ip_adapter_strength: float | None = None, garment_strength: float | None = None) -> bool | str:
        """NaN, infinite or out-of-range strengths are refused before the prompt runs (linked values: when it runs)."""
        return validate_floats(cls, ip_adapter_strength=ip_adapter_strength, garment_strength=garment_strength)

    @classmethod
    def execute(
        cls,
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
        ip_adapter_strength: float = 1.0,
        garment_strength: float = 1.0,
        garment_feature_cache: str = "off",
        ip_image_preprocess: str = "original",
    ) -> io.NodeOutput:
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
            ip_adapter_strength=ip_adapter_strength,
            garment_strength=garment_strength,
            garment_feature_cache=garment_feature_cache,
            ip_image_preprocess=ip_image_preprocess,
        )
        return io.NodeOutput(result.model, result.positive, result.negative, result.latent)


NODES = [IDMVTONApply]
