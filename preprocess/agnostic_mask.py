"""IDM-VTON's agnostic mask (`get_mask_location` of the original, docs/preprocessing.md "Mask rules"), at any image size.

Choice: the rules run natively at the label map's own size, not at 384x512 and back. The original's geometry is
written for H = 512 (W = 384); here every length in pixels scales with s = H / 512, as the original already does for
the arm width:
- arm line width w = int(arm_width / 512 * H) (hd 60, dc 45), shoulder circle box of half-size w // 2, outline w // 2;
- dilation by a 5x5 square k times = one square of radius 2k: radius round(2k * s) (region k = 5, neck k = 1,
  drawn arms k = 4);
- keypoints are pixel coordinates of the label map itself (the original's keypoints at 384x512 scaled by H / 512).
At H = 512 this is the original step by step; at other sizes the mask is the original's geometry scaled (tests compare
a 2x and a 1.5x scene with the 384x512 mask), without the blocky edges of an upscaled 384x512 mask, and images of any
aspect ratio keep round shoulders and square dilations instead of the stretch of a resize to 384x512.

Deviations from the original, on purpose:
- negative keypoint coordinates are clamped to 0 (the original casts them to uint16, which wraps around);
- the largest contour is filled from its exact outline (CHAIN_APPROX_NONE), not from the TC89_L1 approximation, whose
  cut corners would repaint a pixel or a few of kept areas;
- a side whose shoulder or elbow is missing is treated like a missing wrist (the parsed arm), since drawing a line to
  (0, 0) would paint a stripe to the image corner; `keypoints=None` (parsing-only) means every wrist is missing.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw

from .labels import (
    BAG,
    CATEGORIES,
    DRESS,
    FACE,
    HAT,
    LEFT_ARM,
    LEFT_LEG,
    LEFT_SHOE,
    NECK,
    PANTS,
    RIGHT_ARM,
    RIGHT_LEG,
    RIGHT_SHOE,
    SKIRT,
    SUNGLASSES,
    UPPER_CLOTHES,
    check_choice,
)
from .mask_ops import fill_holes

ARM_WIDTHS = {"hd": 60, "dc": 45}
MODEL_TYPES = tuple(ARM_WIDTHS)

HEAD = (HAT, SUNGLASSES, FACE)
FIXED = (LEFT_SHOE, RIGHT_SHOE, HAT, SUNGLASSES, BAG)
REGION = {"upper_body": (UPPER_CLOTHES, DRESS), "dresses": (UPPER_CLOTHES, SKIRT, PANTS, DRESS), "lower_body": (SKIRT, PANTS, LEFT_LEG, RIGHT_LEG)}
EXTRA_FIXED = {"upper_body": (SKIRT, PANTS), "dresses": (), "lower_body": (UPPER_CLOTHES, LEFT_ARM, RIGHT_ARM)}
# OpenPose-18 indices: (shoulder, elbow, wrist) and the parsed arm label of the same side
RIGHT_SIDE, LEFT_SIDE = (2, 3, 4), (5, 6, 7)
WRIST_EXTENSION = 1.2
REFERENCE_HEIGHT = 512


def check_options(category: str, model_type: str) -> None:
    """The mask node's `category` and `model_type` checked (a TryOnInputError naming the input otherwise)."""
    check_choice(category, CATEGORIES, "category")
    check_choice(model_type, MODEL_TYPES, "model_type")


# Colours of the debug parsing image, RGB per label 0..18 (18 = neck)
PALETTE = np.array(
    [
        (0, 0, 0),
        (128, 0, 0),
        (255, 170, 0),
        (0, 85, 85),
        (255, 85, 0),
        (0, 128, 0),
        (0, 0, 255),
        (170, 0, 255),
        (128, 128, 0),
        (85, 51, 0),
        (170, 102, 0),
        (255, 220, 170),
        (85, 255, 170),
        (0, 255, 255),
        (170, 255, 85),
        (255, 255, 0),
        (255, 0, 255),
        (0, 170, 170),
        (255, 128, 128),
    ],
    np.uint8,
)
PREVIEW_GREY = 0.5  # the original's greyed preview: masked pixels at the middle grey


def _dilate(mask: np.ndarray, iterations_5x5: int, scale: float) -> np.ndarray:
    """Dilation equal to `iterations_5x5` passes of a 5x5 square at H = 512, scaled to this size."""
    radius = int(round(2 * iterations_5x5 * scale))
    if radius <= 0:
        return mask.astype(bool)
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def _point(keypoints: np.ndarray | None, index: int) -> np.ndarray | None:
    """Keypoint `index` as float (x, y), or None when missing (x <= 1 and y <= 1, the original's test)."""
    if keypoints is None or index >= len(keypoints):
        return None
    point = np.asarray(keypoints[index], np.float64)[:2]
    if not np.all(np.isfinite(point)) or (point[0] <= 1.0 and point[1] <= 1.0):
        return None
    return point


def draw_arm(keypoints: np.ndarray | None, side: tuple[int, int, int], parsed_arm: np.ndarray, arm_width: int, reverse: bool) -> np.ndarray:
    """The arm area of one side: a polyline shoulder-elbow-extended wrist of width w with round joints plus a circle
    outline at the shoulder, or the parsed arm when a point is missing. Boolean (H, W)."""
    shoulder, elbow, wrist = (_point(keypoints, i) for i in side)
    if shoulder is None or elbow is None or wrist is None:
        return parsed_arm.copy()
    height, width = parsed_arm.shape
    line_width = int(arm_width / REFERENCE_HEIGHT * height)
    wrist = elbow + WRIST_EXTENSION * (wrist - elbow)
    points = [shoulder, elbow, wrist][::-1] if reverse else [shoulder, elbow, wrist]
    # the original casts to uint16 (truncation); negative values would wrap around, so clamp them to 0 instead
    xy = [tuple(int(v) for v in np.maximum(p, 0.0)) for p in points]
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.line(xy, fill=255, width=line_width, joint="curve")
    half = line_width // 2
    box = [shoulder[0] - half, shoulder[1] - half, shoulder[0] + half, shoulder[1] + half]
    draw.arc(box, 0, 360, fill=255, width=line_width // 2)
    return np.asarray(canvas) > 0


def _largest_contour(mask: np.ndarray) -> np.ndarray:
    """Only the contour of largest absolute area (CCOMP: outer and hole contours), filled.

    The contour keeps every boundary pixel (CHAIN_APPROX_NONE), so the filled contour is exactly the component; the
    original's TC89_L1 polygon cuts corners, a pixel or a few into areas the rules keep (shoes, bag, hands)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8) * 255, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(mask.shape, np.uint8)
    if contours:
        areas = [abs(cv2.contourArea(c, True)) for c in contours]
        cv2.drawContours(out, contours, int(np.argmax(areas)), color=255, thickness=-1)
    return out > 0


def agnostic_mask(labels: np.ndarray, keypoints: np.ndarray | None, model_type: str, category: str) -> np.ndarray:
    """IDM-VTON's inpainting mask: (H, W) uint8, 1 = repaint, from ATR labels (+ neck 18) and OpenPose-18 keypoints
    in the labels' pixel coordinates (missing = (0, 0); None = parsing only, every wrist missing)."""
    check_options(category, model_type)
    if keypoints is not None:
        keypoints = np.asarray(keypoints, np.float64).reshape(-1, 2)
    labels = np.asarray(labels)
    scale = labels.shape[0] / REFERENCE_HEIGHT

    # 1. head, fixed, region to repaint, changeable
    head = np.isin(labels, HEAD)
    fixed = np.isin(labels, FIXED + EXTRA_FIXED[category])
    region = np.isin(labels, REGION[category])
    changeable = (labels == 0) | ((labels != 0) & ~fixed)

    # 2. arms: the drawn arm repaints, the rest of the parsed arm (the hand) is kept
    drawn = np.zeros(labels.shape, bool)
    if category in ("upper_body", "dresses"):
        arm_width = ARM_WIDTHS[model_type]
        drawn_right = draw_arm(keypoints, RIGHT_SIDE, labels == RIGHT_ARM, arm_width, reverse=False)
        drawn_left = draw_arm(keypoints, LEFT_SIDE, labels == LEFT_ARM, arm_width, reverse=True)
        hands = ((labels == LEFT_ARM) & ~drawn_left) | ((labels == RIGHT_ARM) & ~drawn_right)
        fixed |= hands
        drawn = drawn_left | drawn_right

    # 3. head kept; region grown; neck and the grown arms repainted
    fixed |= head
    region = _dilate(region, 5, scale)
    if category in ("upper_body", "dresses"):
        neck = _dilate(labels == NECK, 1, scale) & ~head
        region |= neck
        region |= _dilate(drawn, 4, scale)

    # 4. keep = (changeable outside the region) or fixed
    keep = (changeable & ~region) | fixed
    inpaint = ~keep

    # 5. holes filled, largest contour only
    return _largest_contour(fill_holes(inpaint)).astype(np.uint8)


def colourise_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture of a label map with the fixed PALETTE (labels beyond it are white)."""
    labels = np.asarray(labels)
    out = np.full(labels.shape + (3,), 255, np.uint8)
    known = labels < len(PALETTE)
    out[known] = PALETTE[labels[known]]
    return out


def greyed_preview(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The person with the mask area greyed: image * (1 - mask) + 0.5 * mask (float image in [0, 1], soft masks blend)."""
    mask = np.asarray(mask, np.float32)[..., None]
    return np.asarray(image, np.float32) * (1.0 - mask) + PREVIEW_GREY * mask
