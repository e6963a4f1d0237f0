"""DensePose image for IDM-VTON from a TorchScript DensePose model (no detectron2), Parula on black."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..model_folders import files_fingerprint
from ..models.densepose_model import FOLDER
from ..pipeline.densepose import densepose_images
from ..preprocess.densepose import COLORMAPS, PERSON_CHOICES
from .float_settings import validate_floats


class TryOnDensePose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TryOnDensePose",
            display_name="Try-On DensePose (IDM-VTON)",
            category="try-on/preprocess",
            description=(
                "DensePose body-part image in IDM-VTON's convention (fine part index through Parula, black background), "
                "at the input image's size. Runs a TorchScript DensePose export from models/densepose; no detectron2. "
                "An image without a person gives a black image and a warning in the console."
            ),
            inputs=[
                io.Image.Input("image", tooltip="Person photo(s); each image of a batch is processed on its own."),
                io.Combo.Input(
                    "densepose_model",
                    options=folder_paths.get_filename_list("densepose"),
                    tooltip="TorchScript DensePose export in models/densepose, e.g. densepose_r50_fpn_dl.torchscript or densepose_r101_fpn_dl.torchscript.",
                ),
                io.Int.Input(
                    "detection_resolution",
                    default=512,
                    min=64,
                    max=4096,
                    step=8,
                    tooltip="The image is resized so its shorter side is this before it is fed to the detector "
                    "(which resizes again internally to 800). The output is always at the input image's size.",
                ),
                io.Float.Input(
                    "score_threshold",
                    default=0.8,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Minimum person score (IDM-VTON: 0.8). Applies to exports that return scores; the common "
                    ".torchscript files return none and apply the threshold they were exported with.",
                ),
                io.Combo.Input(
                    "person",
                    options=list(PERSON_CHOICES),
                    default="largest",
                    tooltip="Several people found: 'largest' draws only the largest box, 'all' draws everyone.",
                ),
                io.Combo.Input(
                    "colormap",
                    options=list(COLORMAPS),
                    default="parula",
                    tooltip="parula: IDM-VTON's training convention. viridis: for models trained on the other common convention (drawn on black here too).",
                ),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def validate_inputs(cls, score_threshold: float | None = None) -> bool | str:
        """A NaN, infinite or out-of-range threshold is refused before the prompt runs (a linked one: when it runs)."""
        return validate_floats(cls, score_threshold=score_threshold)

    @classmethod
    def fingerprint_inputs(cls, densepose_model: str = "", **kwargs):
        return files_fingerprint((FOLDER, densepose_model))

    @classmethod
    def execute(cls, image, densepose_model: str, detection_resolution: int, score_threshold: float, person: str, colormap: str) -> io.NodeOutput:
        return io.NodeOutput(densepose_images(image, densepose_model, detection_resolution, score_threshold, person, colormap))


NODES = [TryOnDensePose]
