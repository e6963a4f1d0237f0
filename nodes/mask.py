"""The IDM-VTON agnostic mask node: human parsing + pose -> the mask of what the try-on repaints."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..model_folders import files_fingerprint, preferring
from ..pipeline.agnostic_mask import make_agnostic_mask
from ..preprocess.agnostic_mask import MODEL_TYPES
from ..preprocess.labels import CATEGORIES, NONE
from ..preprocess.mask_ops import MASK_COMBINE_MODES

PoseKeypoint = io.Custom("POSE_KEYPOINT")


def _preferring(names: list[str], word: str) -> list[str]:
    return preferring(names, lambda name: word in os.path.basename(name).lower())


class TryOnAgnosticMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        parsing = folder_paths.get_filename_list("humanparsing")
        poses = _preferring(folder_paths.get_filename_list("openpose"), "body_pose")
        return io.Schema(
            node_id="TryOnAgnosticMask",
            display_name="Try-On Agnostic Mask (IDM-VTON)",
            category="try-on",
            description=(
                "IDM-VTON's inpainting mask for a person photo, by its own rules: human parsing (SCHP ATR + LIP, ONNX) "
                "and OpenPose arms decide what is repainted (the garment area, arms, neck) and what is kept (face, hands, "
                "shoes, bag, the other garments). The same mask serves OOTDiffusion Apply (same rules, same model_type and category). "
                "Outputs the mask, a greyed preview and the colourised parsing map."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The person photo (a batch is processed image by image)."),
                io.Combo.Input(
                    "atr_model",
                    options=_preferring(parsing, "atr"),
                    tooltip="SCHP parsing model trained on ATR (parsing_atr.onnx, in ComfyUI/models/humanparsing): the labels the mask rules use.",
                ),
                io.Combo.Input(
                    "lip_model",
                    options=_preferring(parsing, "lip") + [NONE],
                    tooltip="SCHP parsing model trained on LIP (parsing_lip.onnx): tells the neck from the face. none: the neck is not repainted.",
                ),
                io.Combo.Input(
                    "pose_model",
                    options=[NONE] + poses,
                    default=poses[0] if poses else NONE,
                    tooltip="OpenPose body model (body_pose_model.pth, in ComfyUI/models/openpose) for the "
                    "arm lines. none: arms come from the parsing only (hands are repainted too). "
                    "A connected pose_keypoint input wins over this.",
                ),
                io.Combo.Input(
                    "category",
                    options=list(CATEGORIES),
                    default="upper_body",
                    tooltip="What the garment replaces: upper_body (tops), lower_body (pants, skirts), dresses (both).",
                ),
                io.Combo.Input(
                    "model_type",
                    options=list(MODEL_TYPES),
                    default="hd",
                    tooltip="Arm line width of the original: hd (VITON-HD, 60 px at 512 high) or dc (DressCode, 45 px).",
                ),
                io.Int.Input(
                    "grow", default=0, min=-256, max=256, step=1, tooltip="Grow (positive) or shrink (negative) the automatic mask by this many pixels."
                ),
                io.Int.Input("feather", default=0, min=0, max=256, step=1, tooltip="Soft edge width in pixels (0 = hard 0/1 mask as the original)."),
                PoseKeypoint.Input(
                    "pose_keypoint",
                    optional=True,
                    tooltip="OpenPose JSON from an OpenPose/DWPose node (comfyui_controlnet_aux); used instead of pose_model when connected.",
                ),
                io.Mask.Input("user_mask", optional=True, tooltip="A mask you drew (e.g. in the mask editor), combined with the automatic one."),
                io.Combo.Input(
                    "user_mask_mode",
                    options=list(MASK_COMBINE_MODES),
                    default="add",
                    optional=True,
                    tooltip="add: repaint it too; subtract: keep it; replace: use only your mask; intersect: repaint only where both say so.",
                ),
            ],
            outputs=[
                io.Mask.Output(display_name="mask", tooltip="1 = repaint (the try-on area), at the image size."),
                io.Image.Output(display_name="preview", tooltip="The person with the mask area greyed."),
                io.Image.Output(display_name="parsing", tooltip="The human parsing labels in colours, for checking the parsing model."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, atr_model=None, lip_model=None, pose_model=None, **_) -> tuple:
        """Runs again when a chosen model file is replaced under the same name."""
        return files_fingerprint(("humanparsing", atr_model), ("humanparsing", lip_model), ("openpose", pose_model))

    @classmethod
    def execute(
        cls,
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
    ) -> io.NodeOutput:
        return io.NodeOutput(
            *make_agnostic_mask(image, atr_model, lip_model, pose_model, category, model_type, grow, feather, pose_keypoint, user_mask, user_mask_mode)
        )


NODES = [TryOnAgnosticMask]
