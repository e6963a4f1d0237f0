"""Fits any image to the try-on size (default 768x1024), by crop, pad or stretch."""

from __future__ import annotations

from comfy_api.latest import io

from ..preprocess.fit import FIT_MODES, fit_image
from ..preprocess.images import as_rgb


class TryOnFitImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TryOnFitImage",
            display_name="Try-On Fit Image",
            category="try-on",
            description="Resizes an image to the try-on size: centre-crop to the aspect ratio, pad with white, or stretch.",
            inputs=[
                io.Image.Input("image", tooltip="Any image (grayscale and RGBA are converted to RGB)."),
                io.Int.Input("width", default=768, min=64, max=4096, step=8, tooltip="Output width (IDM-VTON: 768)."),
                io.Int.Input("height", default=1024, min=64, max=4096, step=8, tooltip="Output height (IDM-VTON: 1024)."),
                io.Combo.Input(
                    "mode",
                    options=list(FIT_MODES),
                    default="crop",
                    tooltip="crop: centre-crop to the aspect, then resize; pad: resize inside and pad with white; stretch: resize, ignoring the aspect.",
                ),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image, width: int, height: int, mode: str) -> io.NodeOutput:
        return io.NodeOutput(fit_image(as_rgb(image, "image"), height, width, mode))


NODES = [TryOnFitImage]
