"""Node registry: every node class of the pack, by its public (never renamed) id."""

from .apply import IDMVTONApply
from .image_fit import TryOnFitImage
from .model_loaders import IDMVTONGarmentNetLoader, IDMVTONTryonNetLoader
from .sampler import IDMVTONSampler

NODE_CLASS_MAPPINGS = {
    "IDMVTONTryonNetLoader": IDMVTONTryonNetLoader,
    "IDMVTONGarmentNetLoader": IDMVTONGarmentNetLoader,
    "IDMVTONApply": IDMVTONApply,
    "IDMVTONSampler": IDMVTONSampler,
    "TryOnFitImage": TryOnFitImage,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "IDMVTONTryonNetLoader": "IDM-VTON TryonNet Loader",
    "IDMVTONGarmentNetLoader": "IDM-VTON GarmentNet Loader",
    "IDMVTONApply": "IDM-VTON Apply",
    "IDMVTONSampler": "IDM-VTON Sampler",
    "TryOnFitImage": "Try-On Fit Image",
}
