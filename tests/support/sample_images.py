"""Synthetic test images written as PNG files (person, garment, mask, DensePose)."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image


def write_tryon_inputs(folder: pathlib.Path, width: int = 96, height: int = 128, prefix: str = "t") -> dict[str, str]:
    """Deterministic images of the given size; returns file names relative to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    person = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1).astype(np.uint8)
    garment = np.full((height, width, 3), 255, np.uint8)
    garment[height // 6 : height * 5 // 6, width // 5 : width * 4 // 5] = (200, 40, 40)
    mask = np.zeros((height, width, 3), np.uint8)
    mask[height // 4 : height * 3 // 4, width // 4 : width * 3 // 4] = 255
    densepose = (rng.integers(0, 255, (height, width, 3)) * (mask > 0)).astype(np.uint8)
    names = {}
    for kind, array in {"person": person, "garment": garment, "mask": mask, "densepose": densepose}.items():
        name = f"{prefix}_{kind}_{width}x{height}.png"
        Image.fromarray(array).save(folder / name)
        names[kind] = name
    return names
