"""Loader nodes for TryonNet and GarmentNet weights from models/idm_vton."""

from __future__ import annotations

from comfy_api.latest import io

from ..model_folders import resolve, unet_file_choices
from ..models.garment_net import load_garment_model
from ..models.sdxl_unet import WEIGHT_DTYPES
from ..models.tryon_net import load_tryon_model

CATEGORY = "try-on/IDM-VTON"
DTYPE_TOOLTIP = (
    "Weight storage dtype. 'default' lets ComfyUI choose for your GPU; fp8_e4m3fn halves VRAM again. Offloading and --lowvram work with every choice."
)


def weight_dtype_input() -> io.Combo.Input:
    return io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", tooltip=DTYPE_TOOLTIP)


class IDMVTONTryonNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IDMVTONTryonNetLoader",
            display_name="IDM-VTON TryonNet Loader",
            category=CATEGORY,
            description="Loads IDM-VTON's TryonNet (13-channel SDXL inpainting UNet with IP-Adapter) as a MODEL.",
            inputs=[
                io.Combo.Input(
                    "tryon_net_name",
                    options=unet_file_choices("unet/"),
                    tooltip="IDM-VTON's unet/diffusion_pytorch_model.bin (or .safetensors), or a single converted .safetensors, in models/idm_vton.",
                ),
                weight_dtype_input(),
            ],
            outputs=[io.Model.Output(display_name="tryon_model")],
        )

    @classmethod
    def execute(cls, tryon_net_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(load_tryon_model(resolve("idm_vton", tryon_net_name, "tryon_net_name"), weight_dtype, "tryon_net_name"))


class IDMVTONGarmentNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IDMVTONGarmentNetLoader",
            display_name="IDM-VTON GarmentNet Loader",
            category=CATEGORY,
            description=(
                "Loads IDM-VTON's GarmentNet (unet_encoder). Optional: GarmentNet is the frozen SDXL base UNet, "
                "so an SDXL base checkpoint's MODEL works the same."
            ),
            inputs=[
                io.Combo.Input(
                    "garment_net_name",
                    options=unet_file_choices("unet_encoder/"),
                    tooltip="IDM-VTON's unet_encoder/diffusion_pytorch_model.safetensors (or a converted single file) in models/idm_vton.",
                ),
                weight_dtype_input(),
            ],
            outputs=[io.Model.Output(display_name="garment_model")],
        )

    @classmethod
    def execute(cls, garment_net_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(load_garment_model(resolve("idm_vton", garment_net_name, "garment_net_name"), weight_dtype, "garment_net_name"))


NODES = [IDMVTONTryonNetLoader, IDMVTONGarmentNetLoader]
