"""The OOTDiffusion nodes: the UNet loader, the apply node, the original's sampler and scheduler."""

from __future__ import annotations

from comfy_api.latest import io

from ..model_folders import resolve, unet_file_choices
from ..models.ootd_unet import load_ootd_unet
from ..pipeline.ootd_apply import MODEL_TYPES, apply_ootd
from ..pipeline.ootd_sampling import DEFAULT_STEPS, MODES, SCHEDULES, ootd_sampler, ootd_sigmas
from ..preprocess.labels import CATEGORIES
from .model_loaders import weight_dtype_input

CATEGORY = "try-on/OOTDiffusion"
UNET_FOLDER = "diffusion_models"  # ComfyUI's own UNet folder (models/diffusion_models, also listed by the stock UNETLoader)


class OOTDiffusionUNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OOTDiffusionUNetLoader",
            display_name="OOTDiffusion UNet Loader",
            category=CATEGORY,
            description=(
                "Loads one of OOTDiffusion's two SD1.5 UNets as a MODEL: unet_vton (8 input channels, the denoiser) or "
                "unet_garm (4, the garment UNet), from the official folder or a single file. The stock UNETLoader "
                "loads unet_garm too, but not unet_vton (ComfyUI does not know an 8-channel diffusers SD1.5)."
            ),
            inputs=[
                io.Combo.Input(
                    "unet_name",
                    options=unet_file_choices("ootd", UNET_FOLDER),
                    tooltip=(
                        "checkpoints/ootd/ootd_hd (or ootd_dc)/checkpoint-36000/unet_vton or unet_garm/"
                        "diffusion_pytorch_model.safetensors of levihsu/OOTDiffusion, under ComfyUI/models/diffusion_models "
                        "(keep config.json next to it), or a single file."
                    ),
                ),
                weight_dtype_input(),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, unet_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(load_ootd_unet(resolve(UNET_FOLDER, unet_name, "unet_name"), weight_dtype, "unet_name"))


class OOTDiffusionApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OOTDiffusionApply",
            display_name="OOTDiffusion Apply",
            category=CATEGORY,
            description=(
                "Prepares OOTDiffusion exactly as the original: the grey-127 masked person and the person as unscaled VAE "
                "latents, the garment's CLIP image embedding with the fixed text tokens (no prompt), and the garment UNet's "
                "features in every self-attention of unet_vton (computed once per run). Sample its outputs with "
                "SamplerCustom + 'OOTDiffusion Sampler' + 'OOTDiffusion Scheduler' (the original), or any KSampler."
            ),
            inputs=[
                io.Model.Input("vton_model", tooltip="unet_vton (8 input channels) from 'OOTDiffusion UNet Loader': ootd_hd or ootd_dc."),
                io.Model.Input("garment_model", tooltip="unet_garm from the same folder ('OOTDiffusion UNet Loader', or the stock UNETLoader)."),
                io.Vae.Input("vae", tooltip="SD1.5's VAE: an SD1.5 checkpoint's VAE, or OOTDiffusion's vae/ through VAELoader."),
                io.Clip.Input(
                    "clip",
                    tooltip="SD1.5's text encoder (an SD1.5 checkpoint's CLIP, or OOTDiffusion's text_encoder/ through CLIPLoader). "
                    "It encodes only OOTDiffusion's fixed tokens: there is no prompt.",
                ),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 (clip-vit-large-patch14) from CLIPVisionLoader: the garment image embedding."),
                io.Image.Input("person_image", tooltip="The person photo; 768x1024 (3:4) is what OOTDiffusion was trained on. Sides are rounded down to /8."),
                io.Mask.Input("mask", tooltip="Area to repaint (1 = repaint), binarised at 127/255 as the original; resized to the person with nearest."),
                io.Image.Input("garment_image", tooltip="The garment photo (flat, on a plain background), resized to the person's size."),
                io.Combo.Input(
                    "model_type",
                    options=list(MODEL_TYPES),
                    default="hd",
                    tooltip="hd: the ootd_hd UNets (VITON-HD, half body, upper_body only). dc: the ootd_dc UNets (DressCode, full body).",
                ),
                io.Combo.Input(
                    "category",
                    options=list(CATEGORIES),
                    default="upper_body",
                    tooltip="What the garment is: upper_body, lower_body or dresses (dc only); dc puts the word into its text tokens.",
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
    def execute(cls, vton_model, garment_model, vae, clip, clip_vision, person_image, mask, garment_image, model_type: str, category: str) -> io.NodeOutput:
        result = apply_ootd(vton_model, garment_model, vae, clip, clip_vision, person_image, mask, garment_image, model_type, category)
        return io.NodeOutput(result.model, result.positive, result.negative, result.latent)


class OOTDiffusionSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OOTDiffusionSampler",
            display_name="OOTDiffusion Sampler",
            category=CATEGORY,
            description=(
                "The original's sampler for SamplerCustom: UniPC (bh2, order 2, corrector on) or DDIM (eta 0), with the "
                "original's repaint of the area outside the mask after every step, starting from pure noise. Use it with "
                "'OOTDiffusion Scheduler' and the LATENT of 'OOTDiffusion Apply' (its noise_mask carries the mask)."
            ),
            inputs=[
                io.Combo.Input(
                    "mode",
                    options=list(MODES),
                    default="unipc",
                    tooltip="unipc: the original's scheduler (pair it with the 'karras' schedule). ddim: DDIM eta 0 (pair it with the 'ddim' schedule).",
                ),
            ],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def execute(cls, mode: str) -> io.NodeOutput:
        return io.NodeOutput(ootd_sampler(mode))


class OOTDiffusionScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OOTDiffusionScheduler",
            display_name="OOTDiffusion Scheduler",
            category=CATEGORY,
            description=(
                "The original's sigmas: 'karras' = its UniPC schedule (Karras, rho 7, from sigma_max to sigma_min, the last "
                "sigma repeated, not 0); 'ddim' = DDIM's leading timesteps ending at sigma(t=0)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of 'OOTDiffusion Apply' (its noise schedule)."),
                io.Int.Input("steps", default=DEFAULT_STEPS, min=1, max=1000, tooltip="Denoising steps (original: 20; its demo allows 20-40)."),
                io.Combo.Input(
                    "schedule", options=list(SCHEDULES), default="karras", tooltip="karras: for the unipc mode (the original). ddim: for the ddim mode."
                ),
            ],
            outputs=[io.Sigmas.Output(display_name="sigmas")],
        )

    @classmethod
    def execute(cls, model, steps: int, schedule: str) -> io.NodeOutput:
        return io.NodeOutput(ootd_sigmas(model, steps, schedule))


NODES = [OOTDiffusionUNetLoader, OOTDiffusionApply, OOTDiffusionSampler, OOTDiffusionScheduler]
