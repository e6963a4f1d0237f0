"""Fits any image to the try-on size (default 768x1024), by crop, pad or stretch."""

from __future__ import annotations

from ..preprocess.fit import FIT_MODES, fit_image
from ..preprocess.images import as_rgb


class TryOnFitImage:
    DESCRIPTION = "Resizes an image to the try-on size: centre-crop to the aspect ratio, pad with white, or stretch."
    CATEGORY = "try-on"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "fit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Any image (grayscale and RGBA are converted to RGB)."}),
                "width": ("INT", {"default": 768, "min": 64, "max": 4096, "step": 8, "tooltip": "Output width (IDM-VTON: 768)."}),
                "height": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 8, "tooltip": "Output height (IDM-VTON: 1024)."}),
                "mode": (
                    list(FIT_MODES),
                    {
                        "default": "crop",
                        "tooltip": "crop: centre-crop to the aspect, then resize; pad: resize inside and pad with white; stretch: resize, ignoring the aspect.",
                    },
                ),
            }
        }

    def fit(self, image, width: int, height: int, mode: str):
        return (fit_image(as_rgb(image, "image"), height, width, mode),)


NODES = {"TryOnFitImage": (TryOnFitImage, "Try-On Fit Image")}
