"""ComfyUI IMAGE/MASK tensor helpers shared by the nodes: channel fixes, validation, resizing."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TryOnInputError

MAX_SIDE = 4096


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A [0, 1] float image (tensor or array, any shape) as uint8 pixels: clipped to [0, 1], x 255, rounded to nearest."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    return np.rint(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def as_rgb(image: torch.Tensor, input_name: str) -> torch.Tensor:
    """(B, H, W, C) with C = 1, 3 or 4 -> RGB; rejects NaN/Inf and wrong ranks."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 2, 3, 4):
        raise TryOnInputError(f"{input_name}: expected an IMAGE of shape (batch, height, width, channels), got {tuple(image.shape)}.")
    if not torch.isfinite(image).all():
        raise TryOnInputError(f"{input_name}: the image contains NaN or Inf values. Check the node that produced it.")
    if max(image.shape[1:3]) > MAX_SIDE:
        what = "the person (e.g. with 'Try-On Fit Image' or ImageScale)" if input_name == "person_image" else "it (e.g. with ImageScale)"
        raise TryOnInputError(f"{input_name}: {image.shape[2]}x{image.shape[1]} exceeds the {MAX_SIDE}px limit a side. Downscale or crop {what} first.")
    channels = image.shape[-1]
    if channels in (1, 2):
        image = image[..., :1].expand(*image.shape[:-1], 3)
    return image[..., :3].float().clamp(0, 1)


def as_mask(mask: torch.Tensor, input_name: str) -> torch.Tensor:
    """(B, H, W) float mask; rejects NaN/Inf."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise TryOnInputError(f"{input_name}: expected a MASK of shape (batch, height, width), got {tuple(mask.shape)}.")
    if not torch.isfinite(mask).all():
        raise TryOnInputError(f"{input_name}: the mask contains NaN or Inf values. Check the node that produced it.")
    return mask.float()


def resize_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a (B, H, W, C) image; no-op at the same size."""
    if image.shape[1:3] == (height, width):
        return image
    resized = torch.nn.functional.interpolate(image.movedim(-1, 1), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return resized.movedim(1, -1).clamp(0, 1)


def resize_mask_nearest(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour resize of a (B, H, W) mask."""
    if mask.shape[1:3] == (height, width):
        return mask
    return torch.nn.functional.interpolate(mask.unsqueeze(1), size=(height, width), mode="nearest")[:, 0]


def common_batch(sizes: dict[str, int]) -> int:
    """The batch every input broadcasts to: each input has batch 1 or this size, else a clear error."""
    batch = max(sizes.values())
    wrong = {name: size for name, size in sizes.items() if size not in (1, batch)}
    if wrong:
        listed = ", ".join(f"{name}={size}" for name, size in sizes.items())
        raise TryOnInputError(
            f"batch sizes do not match ({listed}): each input needs batch 1 or {batch}. "
            "Use the same number of persons, masks, DensePose images and garments, or a single one."
        )
    return batch


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    return tensor if tensor.shape[0] == batch else tensor.repeat(batch, *([1] * (tensor.ndim - 1)))
