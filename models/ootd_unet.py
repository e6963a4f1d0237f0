"""OOTDiffusion's two SD1.5 UNets as native ComfyUI MODELs: unet_vton (8 input channels) and unet_garm (4).

Both are stock SD1.5 UNets (README.md, "OOTDiffusion"). ComfyUI's stock UNETLoader loads unet_garm's official
file (diffusers names, detected as SD1.5) but not unet_vton's: ComfyUI's list of diffusers UNet layouts has no
8-channel SD1.5 (it knows SD1.5 instruct-pix2pix only from single files with its own names). This loader reads
either UNet from the official folder (`diffusion_pytorch_model.safetensors` + `config.json`) or from a single file
(diffusers or ComfyUI names), at any width, and builds it through ComfyUI's own model configs: unet_vton as SD1.5
instruct-pix2pix (its 4 extra channels are the `concat_latent_image` conditioning, unscaled, as OOTDiffusion feeds
its masked-person latent), unet_garm as SD1.5.
"""

from __future__ import annotations

import json
import os

import comfy.model_base
import comfy.model_detection
import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import torch

from ..errors import TryOnInputError
from .sdxl_unet import CHECKPOINT_UNET_PREFIX, build_model_patcher, convert_unet_keys, file_key_names, unet_config_from_diffusers
from .weight_checks import WeightsFile
from .weights_io import read_state_dict

VTON_IN_CHANNELS = 8
GARM_IN_CHANNELS = 4
SD15_HEADS = 8  # SD1.5's config: attention_head_dim 8, read by diffusers as 8 heads at every level
NOT_AN_OOTD_UNET = (
    "Pick OOTDiffusion's checkpoints/ootd/ootd_hd (or ootd_dc)/checkpoint-36000/unet_vton or unet_garm "
    "diffusion_pytorch_model.safetensors, in ComfyUI/models/diffusion_models."
)


class OOTDVtonModel(comfy.model_base.SD15_instructpix2pix):
    """unet_vton: SD1.5 instruct-pix2pix; its extra input is the masked-person latent of 'OOTDiffusion Apply'."""

    def concat_cond(self, **kwargs):
        image = kwargs.get("concat_latent_image")
        noise = kwargs["noise"]
        if image is None:
            raise TryOnInputError(
                "OOTDiffusion unet_vton MODEL needs the positive/negative of 'OOTDiffusion Apply' (they carry the "
                "masked-person latent). Wire the apply node's outputs into the sampler."
            )
        if image.shape[-2:] != noise.shape[-2:]:
            raise TryOnInputError(
                f"latent_image: size {tuple(noise.shape[-2:])} (latent) differs from the try-on inputs {tuple(image.shape[-2:])}. "
                "Use the LATENT output of 'OOTDiffusion Apply'."
            )
        if image.shape[0] not in (1, noise.shape[0]):
            raise TryOnInputError(
                f"latent_image: batch {noise.shape[0]}, but 'OOTDiffusion Apply' prepared {image.shape[0]} try-ons. Use its "
                "LATENT output as it is (for more samples per pair, batch the person or garment images before the apply node)."
            )
        return super().concat_cond(**kwargs)


class OOTDVtonConfig(comfy.supported_models.SD15_instructpix2pix):
    def __init__(self, unet_config: dict, num_heads: int = SD15_HEADS):
        self.unet_extra_config = {"num_heads": num_heads, "num_head_channels": -1}
        super().__init__(unet_config)

    def get_model(self, state_dict, prefix="", device=None):
        return OOTDVtonModel(self, device=device)


class OOTDGarmConfig(comfy.supported_models.SD15):
    def __init__(self, unet_config: dict, num_heads: int = SD15_HEADS):
        self.unet_extra_config = {"num_heads": num_heads, "num_head_channels": -1}
        super().__init__(unet_config)


def heads_from_config(path: str) -> int:
    """The head count from the config.json next to the weights (official layout); SD1.5's 8 without one."""
    config_path = os.path.join(os.path.dirname(path), "config.json")
    try:
        with open(config_path) as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return SD15_HEADS
    heads = config.get("num_attention_heads") or config.get("attention_head_dim") or SD15_HEADS
    heads = heads[0] if isinstance(heads, list) else heads
    return int(heads) if isinstance(heads, int) and heads > 0 else SD15_HEADS


OOTD_FIX = (
    "Download it again (levihsu/OOTDiffusion: checkpoints/ootd/ootd_hd or ootd_dc/checkpoint-36000/unet_vton or unet_garm/diffusion_pytorch_model.safetensors)."
)


def comfy_unet_from_state_dict(state_dict: dict[str, torch.Tensor], source: WeightsFile) -> tuple[dict, dict[str, torch.Tensor], dict[str, str]]:
    """(ComfyUI UNet config, ComfyUI-named weights, ComfyUI key -> the file's name) of an SD1.5 UNet of any width."""
    input_name = source.input_name
    if any(k.startswith(CHECKPOINT_UNET_PREFIX) for k in state_dict):
        if any(k.startswith(("cond_stage_model.", "first_stage_model.")) for k in state_dict):
            raise TryOnInputError(
                f"{input_name}: this is a full Stable Diffusion checkpoint (UNet + text encoder + VAE), not an OOTDiffusion "
                "UNet. Load it with the stock 'Load Checkpoint' node (its CLIP and VAE serve OOTDiffusion). " + NOT_AN_OOTD_UNET
            )
        state_dict = comfy.utils.state_dict_prefix_replace(state_dict, {CHECKPOINT_UNET_PREFIX: ""}, filter_keys=True)
    if "input_blocks.0.0.weight" in state_dict:  # ComfyUI / original SD names
        unet_config = comfy.model_detection.detect_unet_config(state_dict, "")
        if unet_config is None or "in_channels" not in unet_config:
            raise TryOnInputError(f"{input_name}: these weights are not an SD1.5 UNet. " + NOT_AN_OOTD_UNET)
        return unet_config, state_dict, {}
    if "conv_in.weight" not in state_dict or "down_blocks.0.resnets.0.conv1.weight" not in state_dict:
        raise TryOnInputError(f"{input_name}: these weights are not a UNet (no conv_in / down_blocks keys). " + NOT_AN_OOTD_UNET)
    if any(k.startswith(("add_embedding.", "class_embedding.", "encoder_hid_proj.")) for k in state_dict):
        raise TryOnInputError(f"{input_name}: this UNet has an SDXL-style extra embedding; OOTDiffusion's UNets are SD1.5. " + NOT_AN_OOTD_UNET)
    unet_config = unet_config_from_diffusers(state_dict, input_name)
    comfy_unet, key_map = convert_unet_keys(state_dict, unet_config, input_name, source=source)  # refuses keys outside the layout
    return unet_config, comfy_unet, file_key_names(key_map)


def build_ootd_unet(
    state_dict: dict[str, torch.Tensor],
    weight_dtype: str = "default",
    input_name: str = "unet_name",
    num_heads: int = SD15_HEADS,
    file_name: str = "this file",
):
    """A ModelPatcher around unet_vton (8 channels: SD1.5 instruct-pix2pix) or unet_garm (4: SD1.5)."""
    unet_config, comfy_unet, file_keys = comfy_unet_from_state_dict(state_dict, WeightsFile(input_name, file_name, OOTD_FIX))
    if unet_config.get("adm_in_channels") or unet_config.get("num_classes") or unet_config.get("use_linear_in_transformer"):
        raise TryOnInputError(f"{input_name}: this is an SDXL/SD2-style UNet; OOTDiffusion's UNets are SD1.5. " + NOT_AN_OOTD_UNET)
    channels = unet_config["in_channels"]
    if channels == VTON_IN_CHANNELS:
        model_config = OOTDVtonConfig(unet_config, num_heads)
    elif channels == GARM_IN_CHANNELS:
        model_config = OOTDGarmConfig(unet_config, num_heads)
    else:
        raise TryOnInputError(
            f"{input_name}: this UNet has {channels} input channels; OOTDiffusion's unet_vton has {VTON_IN_CHANNELS} and unet_garm "
            f"{GARM_IN_CHANNELS}. " + NOT_AN_OOTD_UNET
        )
    return build_model_patcher(model_config, comfy_unet, weight_dtype, source=WeightsFile(input_name, file_name, OOTD_FIX, file_keys=file_keys))


def load_ootd_unet(path: str, weight_dtype: str = "default", input_name: str = "unet_name") -> comfy.model_patcher.ModelPatcher:
    """unet_vton or unet_garm from a weights file (the official folder's file, or a single file); errors name `input_name`."""
    return build_ootd_unet(read_state_dict(path, input_name), weight_dtype, input_name, heads_from_config(path), os.path.basename(path))
