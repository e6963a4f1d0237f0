"""Person crop (a 3:4 box around the person, resized to the try-on size) and paste-back into the original photo."""

from __future__ import annotations

import logging

import folder_paths
import torch

from ..errors import TryOnInputError
from ..preprocess.images import as_mask, as_rgb, common_batch
from ..preprocess.paste_back import mask_is_empty, paste_back
from ..preprocess.person_crop import PERSON_SOURCES, CropInfo, centre_box, crop_image, crop_mask, locate_person, person_box

CROP_INFO = "TRYON_CROP_INFO"
NO_PARSING = "none"


def _parsing_labels(parsing_model: str):
    """A function image (H, W, 3) float -> label map, loading the parsing model on first use; None for "none"."""
    if parsing_model == NO_PARSING:
        return None
    path = folder_paths.get_full_path("humanparsing", parsing_model)
    if path is None:
        raise TryOnInputError(f"parsing_model: '{parsing_model}' is not in models/humanparsing. Pick a listed file or 'none'.")
    from ..preprocess import human_parsing  # the parsing module is only needed when a model is chosen

    loaded = []

    def labels(image: torch.Tensor):
        if not loaded:
            loaded.append(human_parsing.load_parsing_model(path, "parsing_model"))
        return human_parsing.parse_image(loaded[0], (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())

    return labels


def _pose_keypoints(pose_keypoint, index: int, width: int, height: int):
    from ..preprocess.pose_keypoints import keypoints_from_pose_json

    return keypoints_from_pose_json(pose_keypoint, index, width, height)


class TryOnPersonCrop:
    DESCRIPTION = (
        "Finds the person (mask, pose keypoints or a human-parsing model) and cuts a box of the output's aspect "
        "(3:4 for 768x1024) around them with a margin, clamped to the photo, resized to the try-on size. "
        "Feed crop_info to Try-On Paste Back to put the result into the original photo."
    )
    CATEGORY = "try-on"
    RETURN_TYPES = ("IMAGE", "MASK", CROP_INFO)
    RETURN_NAMES = ("image", "mask", "crop_info")
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The original photo (any size)."}),
                "width": ("INT", {"default": 768, "min": 64, "max": 4096, "step": 8, "tooltip": "Crop output width (IDM-VTON: 768)."}),
                "height": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 8, "tooltip": "Crop output height (IDM-VTON: 1024)."}),
                "margin": (
                    "FLOAT",
                    {
                        "default": 0.1,
                        "min": 0.0,
                        "max": 2.0,
                        "step": 0.01,
                        "tooltip": "Space around the person, as a fraction of the person's box (its longer side), on every side.",
                    },
                ),
                "person_source": (
                    list(PERSON_SOURCES),
                    {
                        "default": "auto",
                        "tooltip": "What finds the person. auto: the mask if connected and not empty, else the pose, else the "
                        "parsing model, else a centred crop. centre: the largest centred box (the original demo's auto-crop).",
                    },
                ),
            },
            "optional": {
                "mask": (
                    "MASK",
                    {
                        "tooltip": "A mask at the photo's size (e.g. drawn in the mask editor): cropped with the photo; "
                        "its box is the person with person_source mask/auto."
                    },
                ),
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "OpenPose keypoints (comfyui_controlnet_aux format) of the photo."}),
                "parsing_model": (
                    [NO_PARSING, *folder_paths.get_filename_list("humanparsing")],
                    {"default": NO_PARSING, "tooltip": "A human-parsing model from models/humanparsing to find the person without a mask or pose."},
                ),
            },
        }

    def crop(self, image, width: int, height: int, margin: float, person_source: str, mask=None, pose_keypoint=None, parsing_model: str = NO_PARSING):
        image = as_rgb(image, "image")
        batch, image_h, image_w = image.shape[:3]
        if mask is not None:
            mask = as_mask(mask, "mask")
            if tuple(mask.shape[1:3]) != (image_h, image_w):
                raise TryOnInputError(
                    f"mask: it is {mask.shape[2]}x{mask.shape[1]} but the image is {image_w}x{image_h}. Give the crop node a mask at the photo's size."
                )
            batch = common_batch({"image": image.shape[0], "mask": mask.shape[0]})
        image = image.expand(batch, *image.shape[1:])
        labels = _parsing_labels(parsing_model) if person_source in ("auto", "parsing") else None

        boxes = []
        for index in range(batch):
            item_mask = None if mask is None else mask[index if mask.shape[0] > 1 else 0]
            keypoints = None if pose_keypoint is None else (lambda i=index: _pose_keypoints(pose_keypoint, i, image_w, image_h))
            item_labels = None if labels is None else (lambda i=index: labels(image[i]))
            person, _ = locate_person(person_source, index, image_w, image_h, item_mask, keypoints, item_labels)
            boxes.append(centre_box(image_w, image_h, width, height) if person is None else person_box(person, image_w, image_h, width, height, margin))

        crops = torch.cat([crop_image(image[i : i + 1], box, width, height) for i, box in enumerate(boxes)])
        if mask is None:
            crop_masks = torch.zeros(batch, height, width)
        else:
            crop_masks = torch.cat([crop_mask(mask[i : i + 1] if mask.shape[0] > 1 else mask, box, width, height) for i, box in enumerate(boxes)])
        info = CropInfo(image_w, image_h, tuple(boxes), width, height)
        return crops, crop_masks, info


class TryOnPasteBack:
    DESCRIPTION = (
        "Puts the try-on result back into the original photo, only inside the (grown, feathered) mask. "
        "Every pixel outside the feathered mask stays bit-identical to the original photo."
    )
    CATEGORY = "try-on"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "original_image": ("IMAGE", {"tooltip": "The original photo (batch 1, or one per result)."}),
                "tryon_image": ("IMAGE", {"tooltip": "The try-on result (decoded), at the crop size or any size: it is resized to the box."}),
                "mask": (
                    "MASK",
                    {
                        "tooltip": "Where to paste (1 = take the result): at the crop/result size (e.g. the mask the try-on used) "
                        "or at the original photo's size."
                    },
                ),
                "grow": (
                    "INT",
                    {"default": 8, "min": -256, "max": 256, "step": 1, "tooltip": "Grow (or shrink, negative) the mask by this many original-photo pixels."},
                ),
                "feather": ("INT", {"default": 8, "min": 0, "max": 256, "step": 1, "tooltip": "Soft edge width in original-photo pixels; 0 = hard edge."}),
            },
            "optional": {
                "crop_info": (CROP_INFO, {"tooltip": "From Try-On Person Crop. Without it the result covers the whole photo."}),
            },
        }

    def paste(self, original_image, tryon_image, mask, grow: int, feather: int, crop_info: CropInfo | None = None):
        original = as_rgb(original_image, "original_image")
        result = as_rgb(tryon_image, "tryon_image")
        mask = as_mask(mask, "mask")
        if crop_info is not None and not isinstance(crop_info, CropInfo):
            raise TryOnInputError("crop_info: expected the crop_info output of Try-On Person Crop.")
        if mask_is_empty(mask):
            logging.warning("Try-On Paste Back: the mask is empty, so nothing is pasted and the original photo is returned.")
        return (paste_back(original, result, mask, grow, feather, crop_info),)


NODES = {
    "TryOnPersonCrop": (TryOnPersonCrop, "Try-On Person Crop"),
    "TryOnPasteBack": (TryOnPasteBack, "Try-On Paste Back"),
}
