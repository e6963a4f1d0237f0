"""The original's CLIP image preprocessing, exactly: ComfyUI IMAGE -> CLIP pixel values (docs/idm_vton.md, "CLIP image preprocessing").

IDM-VTON (and OOTDiffusion) prepare the garment for the image encoder with transformers' `CLIPImageProcessor` in
its default configuration, the PIL-based processor of transformers 4.x (transformers 5 calls that one
`CLIPImageProcessorPil`; its `CLIPImageProcessor` is a torchvision port whose resize differs by up to 0.015):

1. RGB uint8 pixels,
2. PIL bicubic resize so that the shorter side is 224 and the longer `int(224 * long / short)`,
3. centre crop 224 x 224 at offsets `(h - 224) // 2`, `(w - 224) // 2`,
4. rescale by 1/255, normalise with the OpenAI CLIP mean and std.

ComfyUI's own `clip_preprocess` (torch bicubic, `round(scale * side)`) differs by up to 0.03 in normalised pixels,
about 1.5 % in IDM-VTON's IP tokens; `IP_IMAGE_PREPROCESS` names both choices.

uint8 conversion: `to_uint8` (clip to [0, 1], x 255, round to nearest). An original-pipeline user feeds the
image file's uint8 pixels; ComfyUI's LoadImage turns them into `v / 255` (float32), and rounding gives back exactly
`v` for all 256 levels (so does SaveImage's truncation on these values). For values between levels (an image
resized or generated inside ComfyUI) rounding is the nearest uint8, as PIL's own resampling rounds, while truncation
would shift values that land a hair below a level (e.g. 50.99999) down by one.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .images import to_uint8

# "original": this module's exact PIL path (the original's IP tokens); "comfyui": ComfyUI's CLIP vision encode_image.
IP_IMAGE_PREPROCESS = ("original", "comfyui")
CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resized_size(height: int, width: int, shortest_edge: int = CLIP_SIZE) -> tuple[int, int]:
    """(height, width) with the shorter side at `shortest_edge` and the longer at int(shortest_edge * long / short)."""
    if width <= height:
        return int(shortest_edge * height / width), shortest_edge
    return shortest_edge, int(shortest_edge * width / height)


def centre_crop_offsets(height: int, width: int, size: int = CLIP_SIZE) -> tuple[int, int]:
    """(top, left) of the centred size x size crop."""
    return (height - size) // 2, (width - size) // 2


def clip_pixels_of_uint8(pixels: np.ndarray, size: int = CLIP_SIZE) -> np.ndarray:
    """One (H, W, 3) uint8 image -> (3, size, size) float32 CLIP pixel values, as CLIPImageProcessor's default config."""
    height, width = resized_size(pixels.shape[0], pixels.shape[1], size)
    resized = np.asarray(Image.fromarray(pixels).resize((width, height), resample=Image.Resampling.BICUBIC))
    top, left = centre_crop_offsets(height, width, size)
    crop = resized[top : top + size, left : left + size].astype(np.float64) * (1 / 255)
    normalised = (crop.astype(np.float32) - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
    return normalised.transpose(2, 0, 1)


def clip_pixel_values(image: torch.Tensor, size: int = CLIP_SIZE) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) floats in [0, 1] -> (B, 3, size, size) float32 pixel values on the CPU.

    Channels beyond the first three (alpha) are dropped, as PIL's convert("RGB") does.
    """
    if image.ndim == 3:
        image = image.unsqueeze(0)
    pixels = to_uint8(image[..., :3])
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return torch.from_numpy(np.stack([clip_pixels_of_uint8(np.ascontiguousarray(one), size) for one in pixels]))
