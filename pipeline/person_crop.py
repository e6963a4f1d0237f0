"""What the person crop and paste-back nodes run: find the person, cut a box of the try-on aspect around them, and
later put the try-on result back into the original photo (the geometry is in preprocess/person_crop.py and
preprocess/paste_back.py; the parsing model in models/human_parsing.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ..errors import TryOnInputError
from ..model_folders import resolve
from ..models.human_parsing import load_parsing_model, parse_image
from ..preprocess.images import as_mask, as_rgb, check_resize, common_batch, to_uint8
from ..preprocess.labels import NONE
from ..preprocess.paste_back import mask_is_empty, paste_back
from ..preprocess.person_crop import CropInfo, centre_box, crop_image, crop_mask, locate_person, person_box
from ..preprocess.pose_keypoints import keypoints_from_pose_json
from ..preprocess.settings import check_finite

CROP_SIZE_FIX = "Set width and height between 64 and 4096 (IDM-VTON: 768x1024)."


def parsing_labels(parsing_model: str) -> Callable[[torch.Tensor], np.ndarray] | None:
    """A function image (H, W, 3) float -> label map that loads the parsing model on first use; None for `none`."""
    if parsing_model == NONE:
        return None
    path = resolve("humanparsing", parsing_model, "parsing_model")
    loaded = []

    def labels(image: torch.Tensor) -> np.ndarray:
        if not loaded:
            loaded.append(load_parsing_model(path, "parsing_model"))
        return parse_image(loaded[0], to_uint8(image))

    return labels


def crop_person(
    image: torch.Tensor,
    width: int,
    height: int,
    margin: float,
    person_source: str,
    mask: torch.Tensor | None = None,
    pose_keypoint=None,
    parsing_model: str = NONE,
) -> tuple[torch.Tensor, torch.Tensor, CropInfo]:
    """(crops (B, height, width, 3), cropped masks (B, height, width), CropInfo): one box per image around the person
    that `person_source` finds (the centred box when none), resized to the try-on size."""
    check_finite(margin=margin)
    image = as_rgb(image, "image")
    batch, image_h, image_w = image.shape[:3]
    check_resize("width / height", (image_w, image_h), (width, height), "cropped and resized to width x height", CROP_SIZE_FIX)
    if mask is not None:
        mask = as_mask(mask, "mask")
        if tuple(mask.shape[1:3]) != (image_h, image_w):
            raise TryOnInputError(
                f"mask: it is {mask.shape[2]}x{mask.shape[1]} but the image is {image_w}x{image_h}. Give the crop node a mask at the photo's size."
            )
        batch = common_batch({"image": image.shape[0], "mask": mask.shape[0]})
    image = image.expand(batch, *image.shape[1:])
    labels = parsing_labels(parsing_model) if person_source in ("auto", "parsing") else None

    boxes = []
    for index in range(batch):
        item_mask = None if mask is None else mask[index if mask.shape[0] > 1 else 0]
        keypoints = None if pose_keypoint is None else (lambda i=index: keypoints_from_pose_json(pose_keypoint, i, image_w, image_h))
        item_labels = None if labels is None else (lambda i=index: labels(image[i]))
        person, _ = locate_person(person_source, index, image_w, image_h, item_mask, keypoints, item_labels)
        boxes.append(centre_box(image_w, image_h, width, height) if person is None else person_box(person, image_w, image_h, width, height, margin))

    crops = torch.cat([crop_image(image[i : i + 1], box, width, height) for i, box in enumerate(boxes)])
    if mask is None:
        crop_masks = torch.zeros(batch, height, width)
    else:
        crop_masks = torch.cat([crop_mask(mask[i : i + 1] if mask.shape[0] > 1 else mask, box, width, height) for i, box in enumerate(boxes)])
    return crops, crop_masks, CropInfo(image_w, image_h, tuple(boxes), width, height)


def paste_person_back(
    original_image: torch.Tensor, tryon_image: torch.Tensor, mask: torch.Tensor, grow: int, feather: int, crop_info: CropInfo | None = None
) -> torch.Tensor:
    """The original photo (B, H, W, 3) with the try-on result pasted inside the grown, feathered mask."""
    original = as_rgb(original_image, "original_image")
    result = as_rgb(tryon_image, "tryon_image")
    mask = as_mask(mask, "mask")
    if crop_info is not None and not isinstance(crop_info, CropInfo):
        raise TryOnInputError("crop_info: expected the crop_info output of Try-On Person Crop.")
    if mask_is_empty(mask):
        logging.warning("Try-On Paste Back: the mask is empty, so nothing is pasted and the original photo is returned.")
    return paste_back(original, result, mask, grow, feather, crop_info)
