"""Loader nodes for TryonNet and GarmentNet weights from models/idm_vton."""

from __future__ import annotations

import folder_paths

from ..errors import TryOnInputError
from ..model_folders import unet_file_choices
from ..models.garment_net import build_garment_model
from ..models.sdxl_unet import WEIGHT_DTYPES
from ..models.tryon_net import build_tryon_model
from ..models.weights_io import read_state_dict

CATEGORY = "try-on/IDM-VTON"
DTYPE_TOOLTIP = (
    "Weight storage dtype. 'default' lets ComfyUI choose for your GPU; fp8_e4m3fn halves VRAM again. Offloading and --lowvram work with every choice."
)


def resolve(input_name: str, name: str) -> str:
    path = folder_paths.get_full_path("idm_vton", name)
    if path is None:
        raise TryOnInputError(
            f"{input_name}: '{name}' is not in ComfyUI/models/idm_vton any more (moved, deleted, or a broken "
            "link since the list was made). Put the file back, or refresh the list (R) and pick another file."
        )
    return path


class IDMVTONTryonNetLoader:
    DESCRIPTION = "Loads IDM-VTON's TryonNet (13-channel SDXL inpainting UNet with IP-Adapter) as a MODEL."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("tryon_model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tryon_net_name": (
                    unet_file_choices("unet/"),
                    {"tooltip": "IDM-VTON's unet/diffusion_pytorch_model.bin (or .safetensors), or a single converted .safetensors, in models/idm_vton."},
                ),
                "weight_dtype": (list(WEIGHT_DTYPES), {"default": "default", "tooltip": DTYPE_TOOLTIP}),
            }
        }

    def load(self, tryon_net_name: str, weight_dtype: str):
        state_dict = read_state_dict(resolve("tryon_net_name", tryon_net_name), "tryon_net_name")
        return (build_tryon_model(state_dict, weight_dtype, "tryon_net_name"),)


class IDMVTONGarmentNetLoader:
    DESCRIPTION = (
        "Loads IDM-VTON's GarmentNet (unet_encoder). Optional: GarmentNet is the frozen SDXL base UNet, so an SDXL base checkpoint's MODEL works the same."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("garment_model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "garment_net_name": (
                    unet_file_choices("unet_encoder/"),
                    {"tooltip": "IDM-VTON's unet_encoder/diffusion_pytorch_model.safetensors (or a converted single file) in models/idm_vton."},
                ),
                "weight_dtype": (list(WEIGHT_DTYPES), {"default": "default", "tooltip": DTYPE_TOOLTIP}),
            }
        }

    def load(self, garment_net_name: str, weight_dtype: str):
        state_dict = read_state_dict(resolve("garment_net_name", garment_net_name), "garment_net_name")
        return (build_garment_model(state_dict, weight_dtype, "garment_net_name"),)


NODES = {
    "IDMVTONTryonNetLoader": (IDMVTONTryonNetLoader, "IDM-VTON TryonNet Loader"),
    "IDMVTONGarmentNetLoader": (IDMVTONGarmentNetLoader, "IDM-VTON GarmentNet Loader"),
}
