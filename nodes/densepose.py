"""DensePose image for IDM-VTON from a TorchScript DensePose model (no detectron2), Parula on black."""

from __future__ import annotations

import logging

import comfy.model_management
import folder_paths
import torch

from ..models.densepose_model import densepose_patcher, run_densepose
from ..preprocess.densepose import COLORMAPS, PERSON_CHOICES, apply_score_threshold, detection_size, render_densepose, select_persons, to_detector_input
from ..preprocess.images import as_rgb

log = logging.getLogger(__name__)


class TryOnDensePose:
    DESCRIPTION = (
        "DensePose body-part image in IDM-VTON's convention (fine part index through Parula, black background), "
        "at the input image's size. Runs a TorchScript DensePose export from models/densepose; no detectron2. "
        "An image without a person gives a black image and a warning in the console."
    )
    CATEGORY = "try-on/preprocess"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Person photo(s); each image of a batch is processed on its own."}),
                "densepose_model": (
                    folder_paths.get_filename_list("densepose"),
                    {
                        "tooltip": "TorchScript DensePose export in "
                        "models/densepose, e.g. densepose_r50_fpn_dl.torchscript or densepose_r101_fpn_dl.torchscript."
                    },
                ),
                "detection_resolution": (
                    "INT",
                    {
                        "default": 512,
                        "min": 64,
                        "max": 4096,
                        "step": 8,
                        "tooltip": "The image is resized so its shorter side is this before it is fed to the detector "
                        "(which resizes again internally to 800). The output is always at the input image's size.",
                    },
                ),
                "score_threshold": (
                    "FLOAT",
                    {
                        "default": 0.8,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Minimum person score (IDM-VTON: 0.8). Applies to exports that return scores; the common "
                        ".torchscript files return none and apply the threshold they were exported with.",
                    },
                ),
                "person": (
                    list(PERSON_CHOICES),
                    {"default": "largest", "tooltip": "Several people found: 'largest' draws only the largest box, 'all' draws everyone."},
                ),
                "colormap": (
                    list(COLORMAPS),
                    {
                        "default": "parula",
                        "tooltip": "parula: IDM-VTON's training convention. viridis: for models trained on the other common convention "
                        "(drawn on black here too).",
                    },
                ),
            }
        }

    def render(self, image, densepose_model: str, detection_resolution: int, score_threshold: float, person: str, colormap: str):
        images = as_rgb(image, "image")
        patcher = densepose_patcher(densepose_model, "densepose_model")
        height, width = images.shape[1:3]
        fed_hw = detection_size(height, width, detection_resolution)
        outputs = []
        for index, single in enumerate(images):
            comfy.model_management.throw_exception_if_processing_interrupted()
            detections = run_densepose(patcher, to_detector_input(single, *fed_hw), "densepose_model")
            detections = select_persons(apply_score_threshold(detections, score_threshold), person)
            if len(detections) == 0:
                log.warning("Try-On DensePose: no person found in image %d of the batch; its DensePose image is black.", index)
            outputs.append(render_densepose(detections, fed_hw, (height, width), colormap))
        return (torch.stack(outputs),)


NODES = {"TryOnDensePose": (TryOnDensePose, "Try-On DensePose (IDM-VTON)")}
