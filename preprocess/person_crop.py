"""Person crop geometry: where the person is, a box of the try-on aspect around them, and the crop itself.

Boxes are integer pixel rectangles `(left, top, right, bottom)`, right/bottom exclusive, in the original photo.

Aspect: the box has exactly the target's aspect when the reduced ratio width:height (768x1024 -> 3:4) has a unit
of at most `EXACT_UNIT_MAX` pixels on its longer side; the box is then a whole multiple of that unit. For odd target
sizes (e.g. 770x1030 -> 77:103) whole units would be too coarse, so the box side is rounded to the nearest pixel
(aspect within half a pixel). The crop is resized to the target size either way, and paste-back resizes back to the
exact box, so the geometry round-trips.

Too big for the frame: when the box around the person (plus margin) does not fit inside the image at that aspect,
it is shrunk to the largest box of that aspect the image holds, centred on the person and shifted inside the frame.
Parts of the person may then fall outside the crop (e.g. a full-body person in a 9:16 portrait photo loses head or
feet); no padding is ever added, so every crop pixel is a real photo pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import TryOnInputError
from .images import resize_image
from .labels import check_choice

Box = tuple[int, int, int, int]

EXACT_UNIT_MAX = 32  # px: largest aspect unit (e.g. 3x4) that is used as an exact step for box sizes
POSE_BOX_PAD = 0.1  # keypoints sit inside the body outline (head top above the eyes, feet below ankles)
MISSING_KEYPOINT_MAX = 1.0  # OpenPose convention: a keypoint with x <= 1 and y <= 1 is missing


@dataclass(frozen=True)
class CropInfo:
    """What paste-back needs: the original photo size, one box per image of the batch, and the crop's output size."""

    original_width: int
    original_height: int
    boxes: tuple[Box, ...]
    output_width: int
    output_height: int

    def box(self, index: int) -> Box:
        """The box of batch item `index` (a single box serves every item)."""
        return self.boxes[0] if len(self.boxes) == 1 else self.boxes[index]


def bbox_from_mask(mask: np.ndarray | torch.Tensor, threshold: float = 0.5) -> Box | None:
    """Tight box of the pixels of an (H, W) mask above `threshold` (a label map: use labels > 0); None when empty."""
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rows = np.flatnonzero((array > threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((array > threshold).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def bbox_from_labels(labels: np.ndarray) -> Box | None:
    """Box of every non-background (label != 0) pixel of an (H, W) parsing map; None when all background."""
    return bbox_from_mask(np.asarray(labels) != 0, 0.5)


def bbox_from_keypoints(keypoints: np.ndarray | None, width: int, height: int, pad: float = POSE_BOX_PAD) -> Box | None:
    """Box of the present (not (0,0)-ish) (N, 2) pixel keypoints, padded by `pad` x its height on every side.

    Keypoints mark joints, not the body outline, hence the padding. Clamped to the image; None without any keypoint.
    """
    if keypoints is None:
        return None
    points = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    present = points[~((points[:, 0] <= MISSING_KEYPOINT_MAX) & (points[:, 1] <= MISSING_KEYPOINT_MAX))]
    present = present[np.isfinite(present).all(axis=1)]
    if len(present) == 0:
        return None
    x0, y0 = present.min(axis=0)
    x1, y1 = present.max(axis=0)
    extra = pad * max(y1 - y0, x1 - x0, 1.0)
    left, top = max(0, math.floor(x0 - extra)), max(0, math.floor(y0 - extra))
    right, bottom = min(width, math.ceil(x1 + extra) + 1), min(height, math.ceil(y1 + extra) + 1)
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def _aspect_unit(target_width: int, target_height: int) -> tuple[int, int] | None:
    """(unit_w, unit_h) of the reduced ratio when it is small enough to step box sizes by; else None."""
    divisor = math.gcd(target_width, target_height)
    unit = (target_width // divisor, target_height // divisor)
    return unit if max(unit) <= EXACT_UNIT_MAX else None


def _box_size(wanted_height: float, image_width: int, image_height: int, target_width: int, target_height: int) -> tuple[int, int]:
    """Integer (w, h) at the target aspect, at least `wanted_height` tall when the image allows, never larger than the image."""
    aspect = target_width / target_height
    unit = _aspect_unit(target_width, target_height)
    if unit is not None:
        most = min(image_width // unit[0], image_height // unit[1])
        if most >= 1:
            steps = min(most, max(1, math.ceil(wanted_height / unit[1] - 1e-9)))
            return unit[0] * steps, unit[1] * steps
    height = min(float(image_height), image_width / aspect, max(1.0, wanted_height))
    box_h = max(1, min(image_height, round(height)))
    box_w = max(1, min(image_width, round(box_h * aspect)))
    return box_w, box_h


def _place(centre: float, size: int, limit: int) -> int:
    """Start of a span of `size` centred on `centre`, shifted to lie inside [0, limit)."""
    return int(min(max(0, round(centre - size / 2)), limit - size))


def person_box(person: Box, image_width: int, image_height: int, target_width: int = 768, target_height: int = 1024, margin: float = 0.1) -> Box:
    """Box at the target aspect around a person box, `margin` x the person box's longer side added on every side.

    Centred on the person and clamped inside the image; shrunk to fit when needed (see the module docstring).
    """
    left, top, right, bottom = person
    pad = max(0.0, margin) * max(right - left, bottom - top)
    need_w, need_h = (right - left) + 2 * pad, (bottom - top) + 2 * pad
    aspect = target_width / target_height
    box_w, box_h = _box_size(max(need_h, need_w / aspect), image_width, image_height, target_width, target_height)
    x0 = _place((left + right) / 2, box_w, image_width)
    y0 = _place((top + bottom) / 2, box_h, image_height)
    return x0, y0, x0 + box_w, y0 + box_h


def centre_box(image_width: int, image_height: int, target_width: int = 768, target_height: int = 1024) -> Box:
    """The largest box at the target aspect, centred in the image (the original demo's auto-crop)."""
    box_w, box_h = _box_size(float(image_height), image_width, image_height, target_width, target_height)
    x0, y0 = (image_width - box_w) // 2, (image_height - box_h) // 2
    return x0, y0, x0 + box_w, y0 + box_h


def crop_image(image: torch.Tensor, box: Box, width: int, height: int) -> torch.Tensor:
    """(B, H, W, C) image cut to `box` and resized (bilinear, antialiased) to (B, height, width, C)."""
    left, top, right, bottom = box
    return resize_image(image[:, top:bottom, left:right], height, width)


def crop_mask(mask: torch.Tensor, box: Box, width: int, height: int) -> torch.Tensor:
    """(B, H, W) mask cut to `box` and resized (bilinear, antialiased, so soft at the edge) to (B, height, width)."""
    left, top, right, bottom = box
    return resize_image(mask[:, top:bottom, left:right, None], height, width)[..., 0]


PERSON_SOURCES = ("auto", "mask", "pose", "parsing", "centre")


def locate_person(
    source: str,
    index: int,
    width: int,
    height: int,
    mask: torch.Tensor | None = None,
    keypoints: Callable[[], np.ndarray | None] | None = None,
    labels: Callable[[], np.ndarray] | None = None,
) -> tuple[Box | None, str]:
    """The person box of image `index` from the chosen source, and the source used; (None, "centre") = centred crop.

    `mask` is that image's (H, W) mask; `keypoints` and `labels` are lazy callables (pose, parsing), so that `auto`
    runs the parsing model only when neither a mask nor a pose finds the person. `auto` tries mask, pose, parsing,
    then falls back to the centred crop. A named source that finds no person raises a TryOnInputError naming its input.
    """
    check_choice(source, PERSON_SOURCES, "person_source")
    if source == "centre":
        return None, "centre"
    finders = {
        "mask": ("mask", mask is not None, lambda: bbox_from_mask(mask)),
        "pose": ("pose_keypoint", keypoints is not None, lambda: bbox_from_keypoints(keypoints(), width, height)),
        "parsing": ("parsing_model", labels is not None, lambda: bbox_from_labels(labels())),
    }
    for name in finders if source == "auto" else (source,):
        input_name, connected, find = finders[name]
        if not connected:
            if source == "auto":
                continue
            hint = "choose a parsing model" if name == "parsing" else f"connect the {input_name} input"
            raise TryOnInputError(f"{input_name}: person_source is '{name}' but none is given; {hint}, or use person_source 'auto'.")
        box = find()
        if box is not None:
            return box, name
        if source != "auto":
            raise TryOnInputError(
                f"{input_name}: no person found in image {index} of the batch (the {name} source is empty). "
                "Check that input, or use person_source 'auto' or 'centre'."
            )
    return None, "centre"
