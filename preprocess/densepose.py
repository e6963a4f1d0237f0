"""IDM-VTON's DensePose image (docs/preprocessing.md, "DensePose"): detections -> fine part index -> Parula on black, at the input image's size.

Pure functions over tensors/arrays; the TorchScript model itself is loaded and run by `models/densepose_model.py`,
and `pipeline/densepose.py` ties the two together for the node.

Rendering, as detectron2's fine-segmentation visualizer with alpha 1 and no background (what IDM-VTON ran):
- per detected person, coarse_segm [2, h, w] and fine_segm [25, h, w] logits are resampled bilinearly
  (align_corners=False) to the person's box size, part index I = argmax(fine) * (argmax(coarse) > 0);
- the colour of a pixel with I > 0 is `applyColorMap(uint8(I * 255 / 24), COLORMAP_PARULA)` (the value is
  truncated to uint8, as the original's `astype(np.uint8)`), BGR -> RGB; pixels with I = 0 stay black;
- persons are painted in detection order, so a later person's parts cover an earlier one's.

Output size: the detector may run at another size than the input image (`detection_resolution`). Instead of
rendering at the detector's size and resizing the RGB rendering afterwards, the boxes are scaled to the input
image and the logits are resampled to the scaled box, so the rendering is made directly at the input size.
This is what detectron2 itself does (its postprocess maps boxes back to the original image and the visualizer
resamples logits per box), it keeps every pixel an exact colormap colour (a resized RGB rendering would blend
neighbouring parts into colours no part has, and nearest resizing would make blocky edges), and at equal
sizes it is identical to rendering at the detector's size. IDM-VTON's demo ran detectron2 on a 384x512 copy and
upscaled the RGB rendering to 768x1024 with PIL's default (bicubic) filter; that only softens part boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

N_PARTS = 24  # fine part indices 1..24, 0 = background
COLORMAPS = {"parula": cv2.COLORMAP_PARULA, "viridis": cv2.COLORMAP_VIRIDIS}
PERSON_CHOICES = ("largest", "all")


@dataclass
class Detections:
    """DensePose detections of one image, in the coordinates of the image the detector was fed."""

    boxes: torch.Tensor  # (N, 4) float xyxy, absolute pixels
    coarse_segm: torch.Tensor  # (N, 2, h, w) logits: background / person
    fine_segm: torch.Tensor  # (N, 25, h, w) logits: part 0 (background) .. 24
    scores: torch.Tensor | None = None  # (N,) when the export returns them (see `densepose_model.parse_output`)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def subset(self, keep: torch.Tensor) -> Detections:
        """The detections selected by a boolean mask or index tensor, in their original order."""
        scores = None if self.scores is None else self.scores[keep]
        return Detections(self.boxes[keep], self.coarse_segm[keep], self.fine_segm[keep], scores)


def part_lut(colormap: str = "parula") -> np.ndarray:
    """(25, 3) uint8 RGB colour of each part index 0..24 (row 0 is the colormap's colour; rendering keeps I = 0 black)."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {sorted(COLORMAPS)}")
    values = (np.arange(N_PARTS + 1, dtype=np.float32) * np.float32(255.0 / N_PARTS)).clip(0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(values.reshape(-1, 1), COLORMAPS[colormap]).reshape(-1, 3)
    return np.ascontiguousarray(bgr[:, ::-1])


def detection_size(height: int, width: int, shorter_side: int) -> tuple[int, int]:
    """(height, width) of the image fed to the detector: the input scaled so its shorter side is `shorter_side`."""
    scale = shorter_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def apply_score_threshold(detections: Detections, threshold: float) -> Detections:
    """Drops detections scoring below `threshold`; a no-op when the export returns no scores (its threshold is built in)."""
    if detections.scores is None or len(detections) == 0:
        return detections
    return detections.subset(detections.scores >= threshold)


def select_persons(detections: Detections, person: str) -> Detections:
    """'all' keeps every detection; 'largest' keeps the one with the largest box area (the first on ties)."""
    if person not in PERSON_CHOICES:
        raise ValueError(f"unknown person choice {person!r}; choose one of {PERSON_CHOICES}")
    if person == "all" or len(detections) <= 1:
        return detections
    boxes = detections.boxes.float()
    areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    return detections.subset(torch.argmax(areas).reshape(1))


def scale_boxes(boxes: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """xyxy boxes from an image of size `from_hw` to the same place in an image of size `to_hw`.

    Computed in float64 as box * to / from, so a box edge that lands on a whole pixel stays exactly whole
    (the later int() truncation must not turn 32 into 31.999).
    """
    to_size = torch.tensor([to_hw[1], to_hw[0], to_hw[1], to_hw[0]], dtype=torch.float64, device=boxes.device)
    from_size = torch.tensor([from_hw[1], from_hw[0], from_hw[1], from_hw[0]], dtype=torch.float64, device=boxes.device)
    return boxes.double() * to_size / from_size


def part_index_in_box(coarse: torch.Tensor, fine: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(2, h, w) and (25, h, w) logits -> (height, width) int64 part index: bilinear resample, argmax, coarse mask."""
    coarse = F.interpolate(coarse[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
    fine = F.interpolate(fine[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
    return fine.argmax(dim=0) * (coarse.argmax(dim=0) > 0).long()


def render_part_index(detections: Detections, height: int, width: int) -> torch.Tensor:
    """(height, width) int64 map of part indices (0 = background) of all `detections`, boxes in this image's pixels.

    Each box is placed as detectron2's visualizer does: x = int(x0), y = int(y0), w = int(x1 - x0), h = int(y1 - y0)
    (at least 1), clipped to the canvas; later detections cover earlier ones where they have a part.
    """
    canvas = torch.zeros(height, width, dtype=torch.long)
    for box, coarse, fine in zip(detections.boxes.double().cpu(), detections.coarse_segm.cpu(), detections.fine_segm.cpu(), strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            continue
        x, y = int(x0), int(y0)
        box_w, box_h = max(int(x1 - x0), 1), max(int(y1 - y0), 1)
        parts = part_index_in_box(coarse, fine, box_h, box_w)
        left, top = max(x, 0), max(y, 0)
        right, bottom = min(x + box_w, width), min(y + box_h, height)
        if right <= left or bottom <= top:
            continue
        parts = parts[top - y : bottom - y, left - x : right - x]
        region = canvas[top:bottom, left:right]
        canvas[top:bottom, left:right] = torch.where(parts > 0, parts, region)
    return canvas


def colorize_parts(parts: torch.Tensor, colormap: str = "parula") -> torch.Tensor:
    """(H, W) part indices -> (H, W, 3) float RGB in [0, 1]: colormap colour for I > 0, black for I = 0."""
    lut = torch.from_numpy(part_lut(colormap).astype(np.float32) / 255.0)
    lut[0] = 0.0
    return lut[parts.clamp(0, N_PARTS)]


def render_densepose(detections: Detections, detected_hw: tuple[int, int], output_hw: tuple[int, int], colormap: str = "parula") -> torch.Tensor:
    """IDM-VTON's DensePose image (output_h, output_w, 3) RGB in [0, 1] from detections made on a `detected_hw` image."""
    boxes = scale_boxes(detections.boxes, detected_hw, output_hw)
    scaled = Detections(boxes, detections.coarse_segm, detections.fine_segm, detections.scores)
    return colorize_parts(render_part_index(scaled, *output_hw), colormap)


def to_detector_input(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, 3) RGB float [0, 1] -> (3, height, width) uint8 **BGR**, the channel order the DensePose exports expect."""
    chw = image.movedim(-1, 0)[None].float()
    if chw.shape[2:] != (height, width):
        chw = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    pixels = (chw[0].clamp(0, 1) * 255.0).round().to(torch.uint8)
    return pixels.flip(0).contiguous()
