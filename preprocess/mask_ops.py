"""Mask edits shared by the mask and paste-back nodes: grow/shrink, feather, combine with a user mask."""

from __future__ import annotations

import cv2
import numpy as np
import torch

MASK_COMBINE_MODES = ("add", "subtract", "replace", "intersect")


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
    """Combines an automatic (B, H, W) mask with a user-drawn one of the same size (batch 1 or B)."""
    if mode == "add":
        return torch.maximum(mask, user_mask)
    if mode == "subtract":
        return (mask - user_mask).clamp(0, 1)
    if mode == "replace":
        return user_mask.expand_as(mask).clone()
    if mode == "intersect":
        return torch.minimum(mask, user_mask)
    raise ValueError(f"mode must be one of {MASK_COMBINE_MODES}, got {mode!r}")
