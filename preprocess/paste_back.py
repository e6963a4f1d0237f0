"""Paste a try-on result back into the original photo, only inside the (grown, feathered) mask.

Every pixel where the blend weight is exactly 0 keeps the original's float value (copied, never recomputed), so it
is bit-identical to the input photo, and so are the bytes a PNG saver writes from it.

Mask sizes: the mask may be at the original photo's size (used as is), or at the crop/result size (the crop's output
size or the try-on result's size), in which case it is resized to the box and placed there. When the original size
equals a crop/result size, the mask is taken as a crop-side mask (identical whenever the box is the whole photo).
Grow and feather are in original-photo pixels; the blend weight is zero outside the box (the result only covers it).
"""

from __future__ import annotations

import torch

from ..errors import TryOnInputError
from .images import common_batch, resize_image
from .mask_ops import feather_mask, grow_mask
from .person_crop import Box, CropInfo


def _full_box(width: int, height: int) -> Box:
    return 0, 0, width, height


def mask_in_original(mask: torch.Tensor, boxes: list[Box], original_size: tuple[int, int], crop_sizes: list[tuple[int, int]]) -> torch.Tensor:
    """(B, H, W) mask in original-photo coordinates from a mask at the original size or at one of `crop_sizes` (h, w).

    `boxes` has one box per output item; the mask's batch is 1 or that count.
    """
    height, width = original_size
    mask_size = tuple(mask.shape[1:3])
    if mask_size in crop_sizes:
        canvas = torch.zeros(len(boxes), height, width, dtype=torch.float32)
        for index, (left, top, right, bottom) in enumerate(boxes):
            item = mask[index if mask.shape[0] > 1 else 0][None].float()
            canvas[index, top:bottom, left:right] = resize_image(item[..., None], bottom - top, right - left)[0, ..., 0]
        return canvas
    if mask_size == (height, width):
        return mask.float().expand(len(boxes), height, width).clone()
    accepted = " or ".join(f"{w}x{h}" for h, w in dict.fromkeys([*crop_sizes, (height, width)]))
    raise TryOnInputError(
        f"mask: its size {mask_size[1]}x{mask_size[0]} matches neither the try-on result / crop nor the "
        f"original photo (expected {accepted}). Wire the mask used for the try-on, or the original photo's mask."
    )


def blend_weights(mask: torch.Tensor, boxes: list[Box], grow: int, feather: int) -> torch.Tensor:
    """(B, H, W) blend weight in [0, 1]: mask grown by `grow` px, feathered by `feather` px, zero outside each box."""
    alpha = feather_mask(grow_mask(mask, grow), feather)
    inside = torch.zeros_like(alpha, dtype=torch.bool)
    for index, (left, top, right, bottom) in enumerate(boxes):
        inside[index, top:bottom, left:right] = True
    return torch.where(inside, alpha, torch.zeros_like(alpha))


def paste_back(
    original: torch.Tensor, result: torch.Tensor, mask: torch.Tensor, grow: int = 0, feather: int = 0, crop_info: CropInfo | None = None
) -> torch.Tensor:
    """Composites `result` (B, h, w, 3) into `original` (1 or B, H, W, 3) inside `mask`; returns (B, H, W, 3).

    Without `crop_info` the result covers the whole photo (resized to it when its size differs). Pixels whose
    blend weight is 0 are copied from `original` unchanged.
    """
    height, width = original.shape[1:3]
    sizes = {"original_image": original.shape[0], "tryon_image": result.shape[0], "mask": mask.shape[0]}
    if crop_info is not None:
        if (crop_info.original_width, crop_info.original_height) != (width, height):
            raise TryOnInputError(
                f"original_image: it is {width}x{height} but crop_info was made from a "
                f"{crop_info.original_width}x{crop_info.original_height} image. Wire the image that went into the crop node."
            )
        sizes["crop_info"] = len(crop_info.boxes)
    batch = common_batch(sizes)
    boxes = [crop_info.box(i) if crop_info is not None else _full_box(width, height) for i in range(batch)]
    crop_sizes = [tuple(result.shape[1:3])]
    if crop_info is not None:
        crop_sizes.append((crop_info.output_height, crop_info.output_width))
    alpha = blend_weights(mask_in_original(mask, boxes, (height, width), crop_sizes), boxes, grow, feather)

    out = original.expand(batch, *original.shape[1:]).clone()
    for index, (left, top, right, bottom) in enumerate(boxes):
        weight = alpha[index, top:bottom, left:right]
        touched = weight > 0
        if not touched.any():
            continue
        item = result[index if result.shape[0] > 1 else 0][None].to(out.dtype)
        pasted = resize_image(item, bottom - top, right - left)[0]
        region = out[index, top:bottom, left:right]
        w = weight[touched][:, None].to(out.dtype)
        region[touched] = region[touched] * (1 - w) + pasted[touched] * w
    return out


def mask_is_empty(mask: torch.Tensor) -> bool:
    """True when no mask pixel asks for a repaint (all weights zero)."""
    return not bool((mask > 0).any())
