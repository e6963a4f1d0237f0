"""CLIP vision outputs of a garment image with the originals' preprocessing (IDM-VTON's IP-Adapter, OOTDiffusion's
image embedding), run on a ComfyUI CLIP vision model."""

from __future__ import annotations

import comfy.clip_vision
import comfy.model_management
import torch

from ..errors import TryOnInputError
from ..preprocess.clip_image import CLIP_SIZE, IP_IMAGE_PREPROCESS, clip_pixel_values
from ..preprocess.labels import check_choice


def clip_vision_outputs(clip_vision, image: torch.Tensor, ip_image_preprocess: str = "original") -> comfy.clip_vision.Output:
    """CLIP vision outputs of a ComfyUI IMAGE, as `ClipVisionModel.encode_image` returns them, preprocessed as chosen.

    "original": the original's PIL preprocessing (preprocess/clip_image.py) fed straight to the vision model, loaded
    and placed as `encode_image` does; "comfyui": ComfyUI's own `encode_image` (torch resize).
    """
    check_choice(ip_image_preprocess, IP_IMAGE_PREPROCESS, "ip_image_preprocess")
    if ip_image_preprocess == "comfyui":
        return clip_vision.encode_image(image)
    if getattr(clip_vision, "image_size", CLIP_SIZE) != CLIP_SIZE:
        raise TryOnInputError(
            f"clip_vision: this vision model takes {clip_vision.image_size}px images; the original preprocessing makes "
            f"{CLIP_SIZE}px ones (CLIP ViT-H/14 or ViT-L/14 at 224). Pick that file in CLIPVisionLoader."
        )
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    pixel_values = clip_pixel_values(image).to(clip_vision.load_device).float()
    all_hidden = getattr(clip_vision, "return_all_hidden_states", False)
    with torch.no_grad():
        out = clip_vision.model(pixel_values=pixel_values, intermediate_output="all" if all_hidden else -2)
    device = comfy.model_management.intermediate_device()
    outputs = comfy.clip_vision.Output()
    outputs["last_hidden_state"] = out[0].to(device)
    outputs["image_embeds"] = out[2].to(device)
    outputs["penultimate_hidden_states"] = out[1][:, -2].to(device) if all_hidden else out[1].to(device)
    outputs["mm_projected"] = out[3]
    return outputs
