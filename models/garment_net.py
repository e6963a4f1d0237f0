"""GarmentNet: the frozen SDXL-base UNet, run without its adm embedding. Loads IDM's unet_encoder files."""

from __future__ import annotations

import dataclasses
import os

import comfy.model_base
import comfy.model_patcher
import comfy.supported_models
import torch

from ..errors import TryOnInputError
from .sdxl_unet import build_model_patcher, convert_unet_keys, file_key_names, unet_config_from_diffusers, without_adm
from .weight_checks import WeightsFile
from .weights_io import read_state_dict

STRAY_ADM_PREFIX = "add_embedding."  # IDM's unet_encoder file carries 4 unused add_embedding tensors
GARMENT_FIX = (
    "Download it again (yisol/IDM-VTON: unet_encoder/diffusion_pytorch_model.safetensors), or convert it again with "
    "tools/convert_idm_weights.py; an SDXL base checkpoint's MODEL also serves as garment_model."
)


class GarmentNetConfig(comfy.supported_models.SDXL):
    """SDXL UNet config with no adm input: GarmentNet sees the time embedding only."""

    def get_model(self, state_dict, prefix="", device=None):
        return comfy.model_base.BaseModel(self, model_type=comfy.model_base.ModelType.EPS, device=device)


def build_garment_model(
    state_dict: dict[str, torch.Tensor], weight_dtype: str = "default", input_name: str = "garment_net_name", file_name: str = "this file"
) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher around a 4-channel SDXL UNet from IDM's unet_encoder (or any diffusers SDXL UNet) weights, after the
    weights are checked (models/weight_checks.py) against the network their config describes."""
    source = WeightsFile(input_name, file_name, GARMENT_FIX)
    unet_config = unet_config_from_diffusers(state_dict, input_name)
    if unet_config["in_channels"] != 4:
        raise TryOnInputError(
            f"{input_name}: this UNet has {unet_config['in_channels']} input channels; GarmentNet is a 4-channel SDXL "
            "UNet (IDM-VTON's unet_encoder, or SDXL base). A 13-channel file is TryonNet: load it in the TryonNet loader."
        )
    unet_config = without_adm(unet_config)
    comfy_unet, key_map = convert_unet_keys(state_dict, unet_config, input_name, ignored_prefixes=(STRAY_ADM_PREFIX,), source=source)
    comfy_unet = {k: v for k, v in comfy_unet.items() if not k.startswith("label_emb.")}
    source = dataclasses.replace(source, file_keys=file_key_names(key_map))
    return build_model_patcher(GarmentNetConfig(unet_config), comfy_unet, weight_dtype, source=source)


def load_garment_model(path: str, weight_dtype: str = "default", input_name: str = "garment_net_name") -> comfy.model_patcher.ModelPatcher:
    """GarmentNet from a weights file (IDM's unet_encoder/ file, or a converted single file); errors name `input_name`."""
    return build_garment_model(read_state_dict(path, input_name), weight_dtype, input_name, os.path.basename(path))
