"""Human parsing around the SCHP networks IDM-VTON uses (ATR 18 labels at 512x512, LIP 20 labels at 473x473): the
model input, the decoding of the fused logits, the hole fill and the neck. The networks themselves run in
models/human_parsing.py.

Pre- and post-processing follow the original exactly (docs/preprocessing.md, "Human parsing"):
- the image, in BGR order, is warped to the model's S x S input by an aspect-preserving affine transform (no
  rotation): the box (0, 0, w-1, h-1) is widened or heightened to a square around its centre ((w-1)/2, (h-1)/2),
  which lands on ((S-1)/2, (S-1)/2), the square's side spanning S-1 output pixels (the SCHP transform); bilinear,
  black border;
- pixels / 255, then mean [0.406, 0.456, 0.485] and std [0.225, 0.224, 0.229] (ImageNet's, in BGR order);
- the model returns (parsing, fusion, edge); the second output's first batch item is the fused logits, upsampled
  bilinearly (align_corners) to S x S, warped back to w x h channel by channel (bilinear), then argmax.
- ATR labels: holes in upper-clothes + arms are filled with upper-clothes, except holes larger than 2000 pixels
  (at the original's 384x512; the threshold scales with the image area), and the arms keep their labels.
- label 18 (neck) = pixels ATR calls face (11) and LIP does not call face (LIP label 13).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..errors import TryOnInputError
from .images import to_uint8
from .labels import FACE, LEFT_ARM, LIP_FACE, NECK, RIGHT_ARM, UPPER_CLOTHES
from .mask_ops import fill_holes

MEAN_BGR = np.array([0.406, 0.456, 0.485], np.float32)
STD_BGR = np.array([0.225, 0.224, 0.229], np.float32)
HOLE_KEEP_AREA = 2000.0  # holes larger than this (pixels at 384x512) keep their labels
REFERENCE_AREA = 384 * 512  # the image size the original parses at


def square_warp(width: int, height: int, size: int) -> np.ndarray:
    """2x3 affine matrix from the w x h image to the S x S model input (aspect kept, centred, no rotation)."""
    box_w, box_h = width - 1.0, height - 1.0
    centre_x, centre_y = box_w * 0.5, box_h * 0.5
    side = max(box_w, box_h, 1.0)  # the box widened or heightened to the square's aspect ratio
    scale = (size - 1.0) / side
    dst = (size - 1.0) * 0.5
    return np.array([[scale, 0.0, dst - scale * centre_x], [0.0, scale, dst - scale * centre_y]], np.float64)


def model_input(image_rgb: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (1, 3, S, S) float32 network input of an (H, W, 3) RGB image (uint8, or float in [0, 1]), and its warp."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise TryOnInputError(f"image: expected an RGB image (H, W, 3), got {image_rgb.shape}.")
    height, width = image_rgb.shape[:2]
    pixels = image_rgb if image_rgb.dtype == np.uint8 else to_uint8(image_rgb)
    image_bgr = np.ascontiguousarray(pixels[:, :, ::-1])
    warp = square_warp(width, height, size)
    warped = cv2.warpAffine(image_bgr, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    normalised = (warped.astype(np.float32) / 255.0 - MEAN_BGR) / STD_BGR
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None]), warp


def _upsample_align_corners(logits: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) -> (size, size, C), bilinear with align_corners=True (corner samples map onto corner pixels)."""
    tensor = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))[None]
    up = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=True)
    return up[0].permute(1, 2, 0).numpy()


def logits_at_image_size(fusion: np.ndarray, warp: np.ndarray, size: int, width: int, height: int) -> np.ndarray:
    """(H, W, C) float logits at the image's own size from the (C, h, w) fused logits of the S x S input."""
    upsampled = _upsample_align_corners(fusion, size)
    inverse = cv2.invertAffineTransform(warp)
    channels = [
        cv2.warpAffine(upsampled[:, :, c], inverse, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        for c in range(upsampled.shape[2])
    ]
    return np.stack(channels, axis=-1)


def labels_of(logits: np.ndarray) -> np.ndarray:
    """(H, W) uint8 labels: the argmax over the last axis of (H, W, C) logits."""
    return np.argmax(logits, axis=2).astype(np.uint8)


def fill_clothes_holes(labels: np.ndarray, keep_area: float | None = None) -> np.ndarray:
    """ATR labels with the holes of upper-clothes + arms set to upper-clothes; holes larger than `keep_area`
    (default 2000 px at 384x512, scaled with the image area) and the arms keep their labels."""
    if keep_area is None:
        keep_area = HOLE_KEEP_AREA * labels.shape[0] * labels.shape[1] / REFERENCE_AREA
    padded = np.pad(labels, 1, constant_values=0)
    arms = (padded == LEFT_ARM) | (padded == RIGHT_ARM)
    filled = fill_holes((padded == UPPER_CLOTHES) | arms)
    holes = (filled & (padded != UPPER_CLOTHES) & ~arms).astype(np.uint8) * 255
    contours, _ = cv2.findContours(holes, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)  # exact outlines
    kept = np.zeros_like(holes)
    for index, contour in enumerate(contours):
        if abs(cv2.contourArea(contour, True)) > keep_area:
            cv2.drawContours(kept, contours, index, color=255, thickness=-1)
    keep_original = (kept > 0) | arms
    result = np.where(filled & ~keep_original, UPPER_CLOTHES, padded)
    return result[1:-1, 1:-1].astype(np.uint8)


def person_labels(atr_labels: np.ndarray, lip_labels: np.ndarray | None) -> np.ndarray:
    """The mask rules' labels: ATR labels after hole filling, plus the neck (18) where LIP labels are given."""
    labels = fill_clothes_holes(atr_labels)
    if lip_labels is not None:
        labels[(labels == FACE) & (lip_labels != LIP_FACE)] = NECK
    return labels
