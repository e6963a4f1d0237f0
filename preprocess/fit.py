"""Fitting images to a target size without distortion (centre-crop or pad) or with it (stretch)."""

from __future__ import annotations

import torch

from ..errors import TryOnInputError
from .images import check_resize, resize_image

FIT_MODES = ("crop", "pad", "stretch")


def fit_image(image: torch.Tensor, height: int, width: int, mode: str = "crop", pad_value: float = 1.0) -> torch.Tensor:
    """(B, H, W, C) -> (B, height, width, C); the target is bounded like every resize (preprocess/images.check_resize)."""
    check_resize("width / height", (image.shape[2], image.shape[1]), (width, height), "fitted to width x height", "Set width and height between 64 and 4096.")
    if mode == "stretch":
        return resize_image(image, height, width)
    src_h, src_w = image.shape[1:3]
    if mode == "crop":
        scale = max(height / src_h, width / src_w)
        crop_h, crop_w = min(src_h, round(height / scale)), min(src_w, round(width / scale))
        top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
        return resize_image(image[:, top : top + crop_h, left : left + crop_w], height, width)
    if mode == "pad":
        scale = min(height / src_h, width / src_w)
        new_h, new_w = max(1, round(src_h * scale)), max(1, round(src_w * scale))
        out = torch.full((image.shape[0], height, width, image.shape[3]), pad_value, dtype=image.dtype)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        out[:, top : top + new_h, left : left + new_w] = resize_image(image, new_h, new_w)
        return out
    raise TryOnInputError(f"mode: must be one of {', '.join(FIT_MODES)}, not {mode!r}.")
