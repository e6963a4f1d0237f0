"""Person crop (a 3:4 box around the person, resized to the try-on size) and paste-back into the original photo."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..model_folders import files_fingerprint
from ..pipeline.person_crop import crop_person, paste_person_back
from ..preprocess.labels import NONE
from ..preprocess.person_crop import PERSON_SOURCES
from .float_settings import validate_floats
from .mask import PoseKeypoint

CropInfoType = io.Custom("TRYON_CROP_INFO")


class TryOnPersonCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TryOnPersonCrop",
            display_name="Try-On Person Crop",
            category="try-on",
            description=(
                "Finds the person (mask, pose keypoints or a human-parsing model) and cuts a box of the output's aspect "
                "(3:4 for 768x1024) around them with a margin, clamped to the photo, resized to the try-on size. "
                "Feed crop_info to Try-On Paste Back to put the result into the original photo."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The original photo (any size)."),
                io.Int.Input("width", default=768, min=64, max=4096, step=8, tooltip="Crop output width (IDM-VTON: 768)."),
                io.Int.Input("height", default=1024, min=64, max=4096, step=8, tooltip="Crop output height (IDM-VTON: 1024)."),
                io.Float.Input(
                    "margin",
                    default=0.1,
                    min=0.0,
                    max=2.0,
                    step=0.01,
                    tooltip="Space around the person, as a fraction of the person's box (its longer side), on every side.",
                ),
                io.Combo.Input(
                    "person_source",
                    options=list(PERSON_SOURCES),
                    default="auto",
                    tooltip="What finds the person. auto: the mask if connected and not empty, else the pose, else the "
                    "parsing model, else a centred crop. centre: the largest centred box (the original demo's auto-crop).",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="A mask at the photo's size (e.g. drawn in the mask editor): cropped with the photo; "
                    "its box is the person with person_source mask/auto.",
                ),
                PoseKeypoint.Input("pose_keypoint", optional=True, tooltip="OpenPose keypoints (comfyui_controlnet_aux format) of the photo."),
                io.Combo.Input(
                    "parsing_model",
                    options=[NONE, *folder_paths.get_filename_list("humanparsing")],
                    default=NONE,
                    optional=True,
                    tooltip="A human-parsing model from models/humanparsing to find the person without a mask or pose.",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="image"),
                io.Mask.Output(display_name="mask"),
                CropInfoType.Output(display_name="crop_info"),
            ],
        )

    @classmethod
    def validate_inputs(cls, margin: float | None = None) -> bool | str:
        """A NaN, infinite or out-of-range margin is refused before the prompt runs (a linked one: when it runs)."""
        return validate_floats(cls, margin=margin)

    @classmethod
    def fingerprint_inputs(cls, parsing_model=None, **_) -> tuple:
        """Runs again when the chosen parsing model file is replaced under the same name."""
        return files_fingerprint(("humanparsing", parsing_model))

    @classmethod
    def execute(cls, image, width: int, height: int, margin: float, person_source: str, mask=None, pose_keypoint=None, parsing_model=NONE) -> io.NodeOutput:
        return io.NodeOutput(*crop_person(image, width, height, margin, person_source, mask, pose_keypoint, parsing_model))


class TryOnPasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TryOnPasteBack",
            display_name="Try-On Paste Back",
            category="try-on",
            description=(
                "Puts the try-on result back into the original photo, only inside the (grown, feathered) mask. "
                "Every pixel outside the feathered mask stays bit-identical to the original photo."
            ),
            inputs=[
                io.Image.Input("original_image", tooltip="The original photo (batch 1, or one per result)."),
                io.Image.Input("tryon_image", tooltip="The try-on result (decoded), at the crop size or any size: it is resized to the box."),
                io.Mask.Input(
                    "mask",
                    tooltip="Where to paste (1 = take the result): at the crop/result size (e.g. the mask the try-on used) or at the original photo's size.",
                ),
                io.Int.Input("grow", default=8, min=-256, max=256, step=1, tooltip="Grow (or shrink, negative) the mask by this many original-photo pixels."),
                io.Int.Input("feather", default=8, min=0, max=256, step=1, tooltip="Soft edge width in original-photo pixels; 0 = hard edge."),
                CropInfoType.Input("crop_info", optional=True, tooltip="From Try-On Person Crop. Without it the result covers the whole photo."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, original_image, tryon_image, mask, grow: int, feather: int, crop_info=None) -> io.NodeOutput:
        return io.NodeOutput(paste_person_back(original_image, tryon_image, mask, grow, feather, crop_info))


NODES = [TryOnPersonCrop, TryOnPasteBack]
