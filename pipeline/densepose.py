"""What the DensePose node runs: each image of a batch through the TorchScript model, rendered in IDM-VTON's convention.

The rendering rules (Parula on black, boxes scaled to the input, per-person resampling) are in
`preprocess/densepose.py` and docs/preprocessing.md ("DensePose"); loading and running the network in
`models/densepose_model.py`.
"""

from __future__ import annotations

import logging

import comfy.model_management
import torch

from ..models.densepose_model import densepose_patcher, run_densepose
from ..preprocess.densepose import COLORMAPS, PERSON_CHOICES, apply_score_threshold, detection_size, render_densepose, select_persons, to_detector_input
from ..preprocess.images import as_rgb, check_resize
from ..preprocess.labels import check_choice
from ..preprocess.settings import check_finite

log = logging.getLogger(__name__)


def densepose_images(image: torch.Tensor, densepose_model: str, detection_resolution: int, score_threshold: float, person: str, colormap: str) -> torch.Tensor:
    """(B, H, W, 3) DensePose renderings of a (B, H, W, C) person batch, each image detected on its own."""
    check_choice(person, PERSON_CHOICES, "person")
    check_choice(colormap, COLORMAPS, "colormap")
    check_finite(score_threshold=score_threshold)
    images = as_rgb(image, "image")
    height, width = images.shape[1:3]
    fed_hw = detection_size(height, width, detection_resolution)
    check_resize(
        "image",
        (width, height),
        fed_hw[::-1],
        f"scaled so that its shorter side is detection_resolution ({detection_resolution})",
        "Crop the image to a less extreme aspect ratio, or lower detection_resolution.",
    )
    patcher = densepose_patcher(densepose_model, "densepose_model")
    outputs = []
    for index, single in enumerate(images):
        comfy.model_management.throw_exception_if_processing_interrupted()
        detections = run_densepose(patcher, to_detector_input(single, *fed_hw), "densepose_model")
        detections = select_persons(apply_score_threshold(detections, score_threshold), person)
        if len(detections) == 0:
            log.warning("Try-On DensePose: no person found in image %d of the batch; its DensePose image is black.", index)
        outputs.append(render_densepose(detections, fed_hw, (height, width), colormap))
    return torch.stack(outputs)
