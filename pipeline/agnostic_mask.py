"""What the agnostic mask node runs: human parsing + pose -> IDM-VTON's mask, per image of a batch, then the user's edits.

The rules are preprocess/agnostic_mask.py (docs/preprocessing.md, "Mask rules"); the networks are models/human_parsing.py
and models/openpose_body.py, loaded through ComfyUI's model management.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import comfy.model_management
import numpy as np
import torch

from ..errors import TryOnInputError
from ..model_folders import resolve
from ..models.human_parsing import load_parsing_model, parse_person
from ..models.openpose_body import detect_body_keypoints, load_body_pose_model
from ..preprocess.agnostic_mask import agnostic_mask, check_options, colourise_labels, greyed_preview
from ..preprocess.images import as_mask, as_rgb, common_batch, repeat_to_batch, resize_mask_nearest, to_uint8
from ..preprocess.labels import NONE
from ..preprocess.mask_ops import combine_masks, feather_mask, grow_mask
from ..preprocess.pose_keypoints import keypoints_from_pose_json

# (pixels (H, W, 3) uint8, batch index, width, height) -> (18, 2) keypoints, or None for the parsing-only arms
PoseSource = Callable[[np.ndarray, int, int, int], np.ndarray | None]


def make_agnostic_mask(
    image: torch.Tensor,
    atr_model: str,
    lip_model: str,
    pose_model: str,
    category: str,
    model_type: str,
    grow: int = 0,
    feather: int = 0,
    pose_keypoint=None,
    user_mask: torch.Tensor | None = None,
    user_mask_mode: str = "add",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mask (B, H, W), greyed preview (B, H, W, 3), colourised parsing (B, H, W, 3)) of a person IMAGE batch.

    Model names are files of ComfyUI's `humanparsing` / `openpose` lists (`none` switches LIP or OpenPose off).
    """
    check_options(category, model_type)
    images = as_rgb(image, "image")
    drawn = None if user_mask is None else as_mask(user_mask, "user_mask")  # checked before any model runs
    batch, height, width = images.shape[:3]
    atr = load_parsing_model(resolve("humanparsing", atr_model, "atr_model"), "atr_model")
    lip = None if lip_model == NONE else load_parsing_model(resolve("humanparsing", lip_model, "lip_model"), "lip_model")
    pose = pose_source(pose_model, pose_keypoint, category)

    masks, parsings = [], []
    for index in range(batch):
        comfy.model_management.throw_exception_if_processing_interrupted()
        pixels = to_uint8(images[index])
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
    if drawn is not None:
        drawn = resize_mask_nearest(drawn, height, width)
        common_batch({"image": batch, "user_mask": drawn.shape[0]})
        mask = combine_masks(mask, repeat_to_batch(drawn, batch).to(mask), user_mask_mode)
    mask = feather_mask(mask, feather)
    preview = torch.from_numpy(greyed_preview(images.cpu().numpy(), mask.cpu().numpy())).clamp(0, 1)
    parsing = torch.from_numpy(np.stack(parsings)).float() / 255.0
    return mask, preview, parsing


def pose_source(pose_model: str, pose_keypoint, category: str) -> PoseSource:
    """Where the arm keypoints come from: nowhere for lower_body (its rules use no arms), the connected POSE_KEYPOINT
    JSON, the OpenPose model, or nowhere with pose_model `none` (the parsing-only arms)."""
    if category == "lower_body":
        return lambda pixels, index, width, height: None
    if pose_keypoint is not None:

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
    model = load_body_pose_model(resolve("openpose", pose_model, "pose_model"), "pose_model")

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
