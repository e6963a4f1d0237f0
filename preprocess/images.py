"""ComfyUI IMAGE/MASK tensor helpers shared by the nodes: channel fixes, validation, resizing.

Limits every node shares: an image under `MIN_SIDE` px a side is "too small", a mask with a side of zero size is
refused with one message, an input over `MAX_SIDE` px a side is refused, and every resize a node makes is bounded by
`check_resize` (at most `MAX_SIDE` px a side and `MAX_PIXELS` in all), so no input can make a node allocate an image
of tens of gigabytes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TryOnInputError

MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE
MIN_SIDE = 2


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A [0, 1] float image (tensor or array, any shape) as uint8 pixels: clipped to [0, 1], x 255, rounded to nearest."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    return np.rint(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def as_rgb(image: torch.Tensor, input_name: str) -> torch.Tensor:
    """(B, H, W, C) with C = 1, 3 or 4 -> RGB; rejects wrong ranks, images under MIN_SIDE px a side, NaN/Inf and sides over MAX_SIDE."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 2, 3, 4):
        raise TryOnInputError(f"{input_name}: expected an IMAGE of shape (batch, height, width, channels), got {tuple(image.shape)}.")
    check_not_too_small(image.shape[2], image.shape[1], input_name)
    if not torch.isfinite(image).all():
        raise TryOnInputError(f"{input_name}: the image contains NaN or Inf values. Check the node that produced it.")
    if max(image.shape[1:3]) > MAX_SIDE:
        what = "the person (e.g. with 'Try-On Fit Image' or ImageScale)" if input_name == "person_image" else "it (e.g. with ImageScale)"
        raise TryOnInputError(f"{input_name}: {image.shape[2]}x{image.shape[1]} exceeds the {MAX_SIDE}px limit a side. Downscale or crop {what} first.")
    channels = image.shape[-1]
    if channels in (1, 2):
        image = image[..., :1].expand(*image.shape[:-1], 3)
    return image[..., :3].float().clamp(0, 1)


def check_not_too_small(width: int, height: int, input_name: str) -> None:
    """Every node's "too small": an image under MIN_SIDE px a side (a zero-size side included) has nothing to work on."""
    if min(width, height) < MIN_SIDE:
        raise TryOnInputError(
            f"{input_name}: the image is {width}x{height} pixels, too small (at least {MIN_SIDE}px a side). Use a larger image, or check the node that made it."
        )


def as_mask(mask: torch.Tensor, input_name: str) -> torch.Tensor:
    """(B, H, W) float mask; rejects wrong ranks, a side of zero size and NaN/Inf."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise TryOnInputError(f"{input_name}: expected a MASK of shape (batch, height, width), got {tuple(mask.shape)}.")
    check_mask_not_degenerate(mask, input_name)
    if not torch.isfinite(mask).all():
        raise TryOnInputError(f"{input_name}: the mask contains NaN or Inf values. Check the node that produced it.")
    return mask.float()


def check_mask_not_degenerate(mask: torch.Tensor, input_name: str) -> None:
    """Every node's message for a (B, H, W) mask with a side (or batch) of zero size: there is no mask to resize or use."""
    if 0 in mask.shape:
        raise TryOnInputError(
            f"{input_name}: the mask is {mask.shape[2]}x{mask.shape[1]} pixels (batch {mask.shape[0]}), a side of zero size: there is "
            "no mask to use. Connect a mask at the image's size (e.g. from the mask editor, SolidMask or a mask node), or check the node that made it."
        )


def check_resize(input_name: str, size: tuple[int, int], target: tuple[int, int], how: str, fix: str) -> tuple[int, int]:
    """The (width, height) `target` a node resizes an input of (width, height) `size` to, refused when it would exceed
    MAX_SIDE px a side or MAX_PIXELS in all, or fall under MIN_SIDE; `how` says how the target was reached (named in the
    message with the input and its actual size), `fix` what to change."""
    width, height = (int(v) for v in target)
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise TryOnInputError(
            f"{input_name}: {size[0]}x{size[1]} {how} would become {width}x{height}, over the {MAX_SIDE}px limit a side "
            f"({MAX_SIDE}x{MAX_SIDE} pixels in all). {fix}"
        )
    if min(width, height) < MIN_SIDE:
        raise TryOnInputError(f"{input_name}: {size[0]}x{size[1]} {how} would become {width}x{height}, under {MIN_SIDE}px a side. {fix}")
    return width, height


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
