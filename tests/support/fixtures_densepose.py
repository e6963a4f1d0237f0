"""Tiny TorchScript DensePose models with the real call contract, drawing known parts into known boxes.

`forward(image, bgr: bool = True)`: one uint8 image, (3, H, W) or (H, W, 3), BGR unless `bgr` is False.
A "person" is a red region (R > 127, G < 64, B < 64 in true colours), so feeding RGB as BGR finds the blue
regions instead. Detections: the red pixels' bounding box in the left half of the image, then in the right half
(xyxy, in the fed image's pixels). Each detection's 112x112 segmentation is a 4x4 grid of 28-pixel cells:
fine part of cell (r, c) = (4r + c + 8k) % 24 + 1 for detection k, except cell (3, 3) = part 0 (fine background);
coarse is background in cell (0, 0) only. Logits are one-hot x 8.

- `densepose_r50_fpn_dl.torchscript`: returns the tuple (boxes, coarse_segm, fine_segm, u, v), as the exports
  ComfyUI users download (no scores).
- `densepose_rcnn_R_50_FPN_DL_s1x_fp32.pt`: returns the dict of the exporter's newer version, with
  `scores` = the region's largest red value / 255.
"""

from __future__ import annotations

import pathlib

import torch

SEGM_SIZE = 112
CELL = 28
GRID = 4
TUPLE_MODEL = "densepose_r50_fpn_dl.torchscript"
DICT_MODEL = "densepose_rcnn_R_50_FPN_DL_s1x_fp32.pt"


def cell_parts(k: int) -> list[list[int]]:
    """The fine part index of each 4x4 cell for detection k (plain Python, for the tests' expected images)."""
    return [[0 if (r, c) == (GRID - 1, GRID - 1) else (GRID * r + c + 8 * k) % 24 + 1 for c in range(GRID)] for r in range(GRID)]


def coarse_cells() -> list[list[int]]:
    return [[0 if (r, c) == (0, 0) else 1 for c in range(GRID)] for r in range(GRID)]


class _Detector(torch.nn.Module):
    """The shared detection logic (scripted through its subclasses)."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(4), requires_grad=False)  # a parameter, so ModelPatcher has something to move
        self.segm_size = SEGM_SIZE
        self.cell = CELL
        self.grid = GRID

    def detect(self, image: torch.Tensor, bgr: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if image.dtype != torch.uint8:
            raise RuntimeError("expected a uint8 image")
        if image.dim() != 3:
            raise RuntimeError("expected one image (3, H, W) or (H, W, 3)")
        if image.shape[0] != 3:
            image = image.permute(2, 0, 1)
        rgb = image.flip(0) if bgr else image
        rgb = rgb.to(self.anchor.device).int()
        red = (rgb[0] > 127) & (rgb[1] < 64) & (rgb[2] < 64)
        width = red.shape[1]
        half = width // 2
        boxes: list[torch.Tensor] = []
        scores: list[torch.Tensor] = []
        for side in range(2):
            x_start = side * half
            part = red[:, x_start:] if side == 1 else red[:, :half]
            points = torch.nonzero(part)
            if points.shape[0] > 0:
                y0 = points[:, 0].min()
                y1 = points[:, 0].max() + 1
                x0 = points[:, 1].min() + x_start
                x1 = points[:, 1].max() + 1 + x_start
                boxes.append(torch.stack([x0, y0, x1, y1]).float())
                values = rgb[0][:, x_start:] if side == 1 else rgb[0][:, :half]
                scores.append(values[part].max().float() / 255.0)
        count = len(boxes)
        fine = torch.zeros(count, 25, self.segm_size, self.segm_size)
        coarse = torch.zeros(count, 2, self.segm_size, self.segm_size)
        for k in range(count):
            for r in range(self.grid):
                for c in range(self.grid):
                    label = (self.grid * r + c + 8 * k) % 24 + 1
                    if r == self.grid - 1 and c == self.grid - 1:
                        label = 0
                    fine[k, label, r * self.cell : (r + 1) * self.cell, c * self.cell : (c + 1) * self.cell] = 8.0
                    coarse[k, 0 if r == 0 and c == 0 else 1, r * self.cell : (r + 1) * self.cell, c * self.cell : (c + 1) * self.cell] = 8.0
        device = self.anchor.device
        if count == 0:
            return torch.zeros(0, 4, device=device), torch.zeros(0, device=device), coarse.to(device), fine.to(device)
        return torch.stack(boxes) + self.anchor, torch.stack(scores), coarse.to(device), fine.to(device)


class TupleDensePose(_Detector):
    def forward(self, image: torch.Tensor, bgr: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, scores, coarse, fine = self.detect(image, bgr)
        uv = torch.full_like(fine, 0.5)
        return boxes, coarse, fine, uv, uv.clone()


class DictDensePose(_Detector):
    def forward(self, image: torch.Tensor, bgr: bool = True) -> dict[str, torch.Tensor]:
        boxes, scores, coarse, fine = self.detect(image, bgr)
        uv = torch.full_like(fine, 0.5)
        return {
            "pred_boxes": boxes,
            "scores": scores,
            "pred_classes": torch.zeros(boxes.shape[0], dtype=torch.long),
            "pred_densepose_coarse_segm": coarse,
            "pred_densepose_fine_segm": fine,
            "pred_densepose_u": uv,
            "pred_densepose_v": uv.clone(),
        }


def save_scripted(module: torch.nn.Module, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def write(models: pathlib.Path) -> None:
    """Writes the fixtures under `models/` (a ComfyUI models tree); existing files are kept."""
    folder = models / "densepose"
    for name, module in ((TUPLE_MODEL, TupleDensePose), (DICT_MODEL, DictDensePose)):
        if not (folder / name).exists():
            save_scripted(module(), folder / name)
