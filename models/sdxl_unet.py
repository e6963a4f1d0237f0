"""Diffusers-named SDXL UNet weights -> ComfyUI's UNet config and key names (written once, for both UNets)."""

from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import torch

from ..errors import TryOnInputError
from ..preprocess.labels import check_choice
from .weight_checks import WeightsFile, check_comfy_model_weights

AttentionKey = tuple[str, int, int]  # ComfyUI's (block_name, block_number, block_index)


def _count(state_dict: dict, prefix: str) -> int:
    """Number of consecutive numbered children `prefix{i}.` present in the keys."""
    count = 0
    while any(k.startswith(f"{prefix}{count}.") for k in state_dict):
        count += 1
    return count


CHECKPOINT_UNET_PREFIX = "model.diffusion_model."


def reject_single_file_checkpoint(state_dict: dict[str, torch.Tensor], input_name: str) -> None:
    """A whole SD/SDXL checkpoint (UNet + text encoders + VAE in one file) is not a diffusers UNet: say where it goes."""
    if any(k.startswith(CHECKPOINT_UNET_PREFIX) for k in state_dict):
        raise TryOnInputError(
            f"{input_name}: this is a full Stable Diffusion checkpoint (single-file format), not an IDM-VTON UNet. "
            "Load it with the stock 'Load Checkpoint' node instead; an SDXL base checkpoint's MODEL can go straight into "
            "the garment_model input of 'IDM-VTON Apply'."
        )


def unet_config_from_diffusers(state_dict: dict[str, torch.Tensor], input_name: str) -> dict:
    """ComfyUI `UNetModel` arguments for an SDXL-family diffusers UNet of any width or depth."""
    reject_single_file_checkpoint(state_dict, input_name)
    if "conv_in.weight" not in state_dict or "down_blocks.0.resnets.0.conv1.weight" not in state_dict:
        raise TryOnInputError(
            f"{input_name}: these weights are not a diffusers-format SDXL UNet (no conv_in / down_blocks keys). "
            "Pick IDM-VTON's unet/ or unet_encoder/ weights, or a file converted from them."
        )
    model_channels, in_channels = state_dict["conv_in.weight"].shape[:2]
    num_levels = _count(state_dict, "down_blocks.")
    channel_mult, num_res_blocks, transformer_depth, context_dim = [], [], [], None
    for level in range(num_levels):
        resnets = _count(state_dict, f"down_blocks.{level}.resnets.")
        num_res_blocks.append(resnets)
        width = state_dict[f"down_blocks.{level}.resnets.0.conv1.weight"].shape[0]
        channel_mult.append(width // model_channels)
        for r in range(resnets):
            depth = _count(state_dict, f"down_blocks.{level}.attentions.{r}.transformer_blocks.")
            transformer_depth.append(depth)
            if depth:
                context_dim = state_dict[f"down_blocks.{level}.attentions.{r}.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    transformer_depth_output = []
    for level in range(_count(state_dict, "up_blocks.")):
        for r in range(_count(state_dict, f"up_blocks.{level}.resnets.")):
            transformer_depth_output.append(_count(state_dict, f"up_blocks.{level}.attentions.{r}.transformer_blocks."))
    adm = state_dict.get("add_embedding.linear_1.weight")
    proj_in = next((v for k, v in state_dict.items() if k.endswith("attentions.0.proj_in.weight")), None)
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": state_dict["conv_out.weight"].shape[0],
        "use_spatial_transformer": True,
        "legacy": False,
        "in_channels": int(in_channels),
        "model_channels": int(model_channels),
        "num_res_blocks": num_res_blocks,
        "channel_mult": channel_mult,
        "transformer_depth": transformer_depth,
        "transformer_depth_output": transformer_depth_output[::-1],  # ComfyUI lists output blocks shallow-first
        "transformer_depth_middle": _count(state_dict, "mid_block.attentions.0.transformer_blocks."),
        "use_linear_in_transformer": proj_in is not None and proj_in.ndim == 2,
        "context_dim": context_dim,
        "num_head_channels": 64,
        "num_classes": "sequential" if adm is not None else None,
        "adm_in_channels": int(adm.shape[1]) if adm is not None else None,
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }


def without_adm(unet_config: dict) -> dict:
    """The same UNet with no label/adm embedding (GarmentNet runs on the time embedding only)."""
    return {**unet_config, "num_classes": None, "adm_in_channels": None}


def attention_key(comfy_prefix: str) -> AttentionKey:
    """`input_blocks.4.1.transformer_blocks.0` -> ("input", 4, 0); the middle block is ("middle", 0, j)."""
    parts = comfy_prefix.split(".")
    index = int(parts[parts.index("transformer_blocks") + 1])
    if parts[0] == "middle_block":
        return ("middle", 0, index)
    return (parts[0].removesuffix("_blocks"), int(parts[1]), index)


def convert_unet_keys(
    state_dict: dict[str, torch.Tensor],
    unet_config: dict,
    input_name: str,
    ignored_prefixes: tuple[str, ...] = (),
    source: WeightsFile | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Renames diffusers UNet keys to ComfyUI's; returns the weights and the diffusers->ComfyUI name map."""
    key_map = comfy.utils.unet_to_diffusers(unet_config)
    converted = {key_map[k]: v for k, v in state_dict.items() if k in key_map}
    leftover = [k for k in state_dict if k not in key_map and not k.startswith(ignored_prefixes)]
    if leftover:
        source = source or WeightsFile(input_name, "this file")
        raise source.error(f"has {len(leftover)} key(s) that are not in this UNet's layout ({source.shown(leftover)}): it is damaged or another kind of file")
    return converted, key_map


def file_key_names(key_map: dict[str, str]) -> dict[str, str]:
    """ComfyUI UNet key -> the diffusers name a file has for it (for messages about the file's keys)."""
    return {comfy_key: diffusers_key for diffusers_key, comfy_key in key_map.items()}


WEIGHT_DTYPES = {"default": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e4m3fn": torch.float8_e4m3fn}


def build_model_patcher(
    model_config,
    comfy_unet: dict[str, torch.Tensor],
    weight_dtype: str = "default",
    extra_weights: dict[str, torch.Tensor] | None = None,
    source: WeightsFile | None = None,
):
    """Builds `model_config`'s model at the chosen weight dtype, loads UNet (+ extra) weights, wraps it in a ModelPatcher.

    Before anything is built, the weights are checked against the model `model_config` describes (models/weight_checks.py):
    exactly its keys, its shapes, floating point and finite values; `source` says which node input and file the messages
    name (without it they name neither).
    """
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    check_choice(weight_dtype, WEIGHT_DTYPES, "weight_dtype")  # ComfyUI 0.3.75 does not check V3 combo values against their options
    weights = {**comfy_unet, **(extra_weights or {})}
    check_comfy_model_weights(model_config, weights, source or WeightsFile("weights", "this UNet file"))
    dtype = WEIGHT_DTYPES[weight_dtype]
    if dtype is None:
        dtype = comfy.model_management.unet_dtype(
            model_params=comfy.utils.calculate_parameters(comfy_unet),
            supported_dtypes=model_config.supported_inference_dtypes,
            weight_dtype=comfy.utils.weight_dtype(comfy_unet),
        )
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model(comfy_unet, "").to(offload_device)
    model.load_model_weights(weights, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
