"""Mask edits shared by the mask, parsing and paste-back steps: hole fill, grow/shrink, feather, combine with a user mask."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .labels import check_choice

MASK_COMBINE_MODES = ("add", "subtract", "replace", "intersect")


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The original's hole fill of an (H, W) boolean mask: the one-pixel image border is cleared, the outside is flooded
    from the corner (0, 0), and whatever the flood did not reach (the mask and the holes it encloses) is returned."""
    image = np.where(mask, 255, 0).astype(np.uint8)
    image[0, :] = image[-1, :] = 0
    image[:, 0] = image[:, -1] = 0
    flooded = image.copy()
    cv2.floodFill(flooded, np.zeros((image.shape[0] + 2, image.shape[1] + 2), np.uint8), (0, 0), 255)
    return (image | cv2.bitwise_not(flooded)) > 0


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(B, H, W) mask grown by `pixels` (a disk), or shrunk when negative; 0 returns it unchanged."""
    if pixels == 0:
        return mask
    kernel = _disk(abs(pixels))
    operation = cv2.dilate if pixels > 0 else cv2.erode
    out = [torch.from_numpy(operation(m.cpu().float().numpy(), kernel, borderType=cv2.BORDER_REPLICATE)) for m in mask]
    return torch.stack(out).to(mask)


def feather_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(B, H, W) mask with a soft edge about `pixels` wide on each side (Gaussian, sigma = pixels / 2); 0 = unchanged."""
    if pixels <= 0:
        return mask
    size = 2 * pixels + 1
    sigma = pixels / 2.0
    out = [torch.from_numpy(cv2.GaussianBlur(m.cpu().float().numpy(), (size, size), sigma, borderType=cv2.BORDER_REPLICATE)) for m in mask]
    return torch.stack(out).to(mask).clamp(0, 1)


def combine_masks(mask: torch.Tensor, user_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Combines an automatic (B, H, W) mask with a user-drawn one of the same size (batch 1 or B); `mode` is the
    mask node's `user_mask_mode`."""
    check_choice(mode, MASK_COMBINE_MODES, "user_mask_mode")
    if mode == "add":
        return torch.maximum(mask, user_mask)
    if mode == "subtract":
        return (mask - user_mask).clamp(0, 1)
    if mode == "replace":
        return user_mask.expand_as(mask).clone()
    return torch.minimum(mask, user_mask)
