"""The IDM-VTON agnostic mask node: human parsing + pose -> the mask of what the try-on repaints."""

from __future__ import annotations

import logging
import os

import comfy.model_management
import folder_paths
import numpy as np
import torch

from ..errors import TryOnInputError
from ..preprocess.agnostic_mask import ARM_WIDTHS, CATEGORIES, agnostic_mask, colourise_labels, greyed_preview
from ..preprocess.human_parsing import load_parsing_model, parse_person
from ..preprocess.images import as_mask, as_rgb, common_batch, repeat_to_batch, resize_mask_nearest
from ..preprocess.mask_ops import MASK_COMBINE_MODES, combine_masks, feather_mask, grow_mask

NONE = "none"


def _preferring(names: list[str], word: str) -> list[str]:
    return sorted(names, key=lambda n: (word not in os.path.basename(n).lower(), n))


def _full_path(folder: str, name: str, input_name: str) -> str:
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise TryOnInputError(f"{input_name}: '{name}' is not in ComfyUI/models/{folder}. Put the file there and refresh.")
    return path


class TryOnAgnosticMask:
    DESCRIPTION = (
        "IDM-VTON's inpainting mask for a person photo, by its own rules: human parsing (SCHP ATR + LIP, ONNX) "
        "and OpenPose arms decide what is repainted (the garment area, arms, neck) and what is kept (face, hands, "
        "shoes, bag, the other garments). Outputs the mask, a greyed preview and the colourised parsing map."
    )
    CATEGORY = "try-on"
    RETURN_TYPES = ("MASK", "IMAGE", "IMAGE")
    RETURN_NAMES = ("mask", "preview", "parsing")
    OUTPUT_TOOLTIPS = (
        "1 = repaint (the try-on area), at the image size.",
        "The person with the mask area greyed.",
        "The human parsing labels in colours, for checking the parsing model.",
    )
    FUNCTION = "make_mask"

    @classmethod
    def INPUT_TYPES(cls):
        parsing = folder_paths.get_filename_list("humanparsing")
        poses = _preferring(folder_paths.get_filename_list("openpose"), "body_pose")
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The person photo (a batch is processed image by image)."}),
                "atr_model": (
                    _preferring(parsing, "atr"),
                    {"tooltip": "SCHP parsing model trained on ATR (parsing_atr.onnx, in ComfyUI/models/humanparsing): the labels the mask rules use."},
                ),
                "lip_model": (
                    _preferring(parsing, "lip") + [NONE],
                    {"tooltip": "SCHP parsing model trained on LIP (parsing_lip.onnx): tells the neck from the face. none: the neck is not repainted."},
                ),
                "pose_model": (
                    [NONE] + poses,
                    {
                        "default": poses[0] if poses else NONE,
                        "tooltip": "OpenPose body model (body_pose_model.pth, in ComfyUI/models/openpose) for the "
                        "arm lines. none: arms come from the parsing only (hands are repainted too). "
                        "A connected pose_keypoint input wins over this.",
                    },
                ),
                "category": (
                    list(CATEGORIES),
                    {"default": "upper_body", "tooltip": "What the garment replaces: upper_body (tops), lower_body (pants, skirts), dresses (both)."},
                ),
                "model_type": (
                    list(ARM_WIDTHS),
                    {"default": "hd", "tooltip": "Arm line width of the original: hd (VITON-HD, 60 px at 512 high) or dc (DressCode, 45 px)."},
                ),
                "grow": (
                    "INT",
                    {
                        "default": 0,
                        "min": -256,
                        "max": 256,
                        "step": 1,
                        "tooltip": "Grow (positive) or shrink (negative) the automatic mask by this many pixels.",
                    },
                ),
                "feather": (
                    "INT",
                    {"default": 0, "min": 0, "max": 256, "step": 1, "tooltip": "Soft edge width in pixels (0 = hard 0/1 mask as the original)."},
                ),
            },
            "optional": {
                "pose_keypoint": (
                    "POSE_KEYPOINT",
                    {"tooltip": "OpenPose JSON from an OpenPose/DWPose node (comfyui_controlnet_aux); used instead of pose_model when connected."},
                ),
                "user_mask": ("MASK", {"tooltip": "A mask you drew (e.g. in the mask editor), combined with the automatic one."}),
                "user_mask_mode": (
                    list(MASK_COMBINE_MODES),
                    {
                        "default": "add",
                        "tooltip": "add: repaint it too; subtract: keep it; replace: use only your mask; intersect: repaint only where both say so.",
                    },
                ),
            },
        }

    def make_mask(
        self,
        image,
        atr_model: str,
        lip_model: str,
        pose_model: str,
        category: str,
        model_type: str,
        grow: int,
        feather: int,
        pose_keypoint=None,
        user_mask=None,
        user_mask_mode: str = "add",
    ):
        if category not in CATEGORIES:
            raise TryOnInputError(f"category: must be one of {', '.join(CATEGORIES)}, got {category!r}.")
        if model_type not in ARM_WIDTHS:
            raise TryOnInputError(f"model_type: must be one of {', '.join(ARM_WIDTHS)}, got {model_type!r}.")
        images = as_rgb(image, "image")
        batch, height, width = images.shape[:3]
        atr = load_parsing_model(_full_path("humanparsing", atr_model, "atr_model"), "atr_model")
        lip = None if lip_model == NONE else load_parsing_model(_full_path("humanparsing", lip_model, "lip_model"), "lip_model")
        pose = self._pose_source(pose_model, pose_keypoint, category)

        masks, parsings = [], []
        for index in range(batch):
            comfy.model_management.throw_exception_if_processing_interrupted()
            pixels = (images[index].cpu().numpy() * 255.0).round().astype(np.uint8)
            labels = parse_person(atr, lip, pixels)
            if not labels.any():
                raise TryOnInputError(
                    f"image: no person found in image {index} of the batch (every pixel parsed as background). "
                    "Use a photo of a person, or crop to the person first."
                )
            keypoints = pose(pixels, index, width, height)
            masks.append(agnostic_mask(labels, keypoints, model_type, category))
            parsings.append(colourise_labels(labels))

        mask = grow_mask(torch.from_numpy(np.stack(masks)).float(), grow)
        if user_mask is not None:
            drawn = resize_mask_nearest(as_mask(user_mask, "user_mask"), height, width)
            common_batch({"image": batch, "user_mask": drawn.shape[0]})
            mask = combine_masks(mask, repeat_to_batch(drawn, batch).to(mask), user_mask_mode)
        mask = feather_mask(mask, feather)
        preview = torch.from_numpy(greyed_preview(images.cpu().numpy(), mask.cpu().numpy())).clamp(0, 1)
        parsing = torch.from_numpy(np.stack(parsings)).float() / 255.0
        return (mask, preview, parsing)

    @staticmethod
    def _pose_source(pose_model: str, pose_keypoint, category: str):
        """A function (pixels, index, width, height) -> keypoints (18, 2) or None for the parsing-only fallback."""
        if category == "lower_body":
            return lambda pixels, index, width, height: None  # the lower-body rules use no arms
        if pose_keypoint is not None:
            from ..preprocess.pose_keypoints import keypoints_from_pose_json

            def from_json(pixels, index, width, height):
                keypoints = keypoints_from_pose_json(pose_keypoint, index, width, height)
                if keypoints is None:
                    raise TryOnInputError(
                        f"image: no person found in image {index} of the batch (pose_keypoint has no person "
                        "for it). Check the pose node's output, or disconnect pose_keypoint."
                    )
                return keypoints

            return from_json
        if pose_model == NONE:
            return lambda pixels, index, width, height: None
        from ..preprocess.openpose_body import detect_body_keypoints, load_body_pose_model

        model = load_body_pose_model(_full_path("openpose", pose_model, "pose_model"), "pose_model")

        def detect(pixels, index, width, height):
            keypoints = detect_body_keypoints(model, pixels)
            if keypoints is None:  # the parsing did find a person: use the original's parsing-only arms, and say so
                logging.warning(
                    "Try-On Agnostic Mask: OpenPose found no body in image %d of the batch; the arms come from "
                    "the parsing only (as when the original misses the wrists). Check the mask preview.",
                    index,
                )
            return keypoints

        return detect


NODES = {"TryOnAgnosticMask": (TryOnAgnosticMask, "Try-On Agnostic Mask (IDM-VTON)")}
