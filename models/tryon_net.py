"""IDM-VTON TryonNet (13-channel SDXL inpainting UNet + IP-Adapter Plus) as a native ComfyUI MODEL."""

from __future__ import annotations

import dataclasses
import logging
import os

import comfy.model_base
import comfy.model_patcher
import comfy.ops
import comfy.supported_models
import comfy.utils
import torch

from ..attention.resampler import Resampler
from ..errors import TryOnInputError
from .sdxl_unet import (
    AttentionKey,
    attention_key,
    build_model_patcher,
    convert_unet_keys,
    file_key_names,
    reject_single_file_checkpoint,
    unet_config_from_diffusers,
)
from .weight_checks import WeightsFile
from .weights_io import read_state_dict

TRYON_IN_CHANNELS = 13
RESAMPLER_PREFIX = "encoder_hid_proj."
IP_SUFFIXES = ("attn2.processor.to_k_ip.weight", "attn2.processor.to_v_ip.weight")
TRYON_FIX = "Download it again (yisol/IDM-VTON: unet/diffusion_pytorch_model.bin, or IDM-VTON-DC), or convert it again with tools/convert_idm_weights.py."


def ip_module_name(key: AttentionKey) -> str:
    return "{}_{}_{}".format(*key)


class IPKeyValue(torch.nn.Module):
    """The extra key/value projections of one cross-attention for the 16 IP tokens."""

    def __init__(self, context_dim: int, width: int, operations, device=None, dtype=None):
        super().__init__()
        self.to_k_ip = operations.Linear(context_dim, width, bias=False, device=device, dtype=dtype)
        self.to_v_ip = operations.Linear(context_dim, width, bias=False, device=device, dtype=dtype)


class TryonSDXL(comfy.model_base.SDXL):
    """SDXL model whose 9 extra input channels come from the apply node, carrying the IP-Adapter weights."""

    def __init__(
        self,
        model_config,
        ip_layout: dict[AttentionKey, int],
        resampler_shapes: dict[str, torch.Tensor],
        model_type=comfy.model_base.ModelType.EPS,
        device=None,
    ):
        super().__init__(model_config, model_type=model_type, device=device)
        unet_config = model_config.unet_config
        operations = model_config.custom_operations or comfy.ops.pick_operations(
            unet_config.get("dtype"), self.manual_cast_dtype, fp8_optimizations=model_config.optimizations.get("fp8", False), model_config=model_config
        )
        dtype = unet_config.get("dtype")
        context_dim = unet_config["context_dim"]
        self.ip_adapter = torch.nn.ModuleDict(
            {ip_module_name(key): IPKeyValue(context_dim, width, operations, device=device, dtype=dtype) for key, width in ip_layout.items()}
        )
        self.ip_resampler = Resampler.from_state_dict_shapes(resampler_shapes, operations=operations, device=device, dtype=dtype)

    def concat_cond(self, **kwargs):
        concat = kwargs.get("tryon_concat")
        if concat is None:
            raise TryOnInputError(
                "TryonNet MODEL needs the positive/negative from the 'IDM-VTON Apply' node (they carry the mask, "
                "masked person and DensePose channels). Wire the apply node's outputs into the sampler."
            )
        noise = kwargs["noise"]
        if concat.shape[-2:] != noise.shape[-2:]:
            raise TryOnInputError(
                f"latent_image: size {tuple(noise.shape[-2:])} (latent) differs from the try-on inputs "
                f"{tuple(concat.shape[-2:])}. Use the LATENT output of the 'IDM-VTON Apply' node."
            )
        return comfy.utils.resize_to_batch_size(concat, noise.shape[0]).to(kwargs["device"])

    def load_model_weights(self, sd, unet_prefix=""):
        extra = {k: sd.pop(k) for k in list(sd) if k.startswith(("ip_adapter.", "ip_resampler."))}
        missing, _ = self.load_state_dict(extra, strict=False)
        missing = [k for k in missing if k.startswith(("ip_adapter.", "ip_resampler."))]
        if missing:
            raise TryOnInputError(f"tryon_net_name: IP-Adapter weights missing from the file, e.g. {missing[:3]}.")
        return super().load_model_weights(sd, unet_prefix)


class TryonNetConfig(comfy.supported_models.SDXL):
    """ComfyUI model config for TryonNet: eps prediction with zero-terminal-SNR, as IDM-VTON was trained."""

    def __init__(self, unet_config: dict, ip_layout: dict[AttentionKey, int], resampler_shapes: dict[str, torch.Tensor]):
        super().__init__(unet_config)
        self.sampling_settings = {**self.sampling_settings, "zsnr": True}
        self.ip_layout = ip_layout
        self.resampler_shapes = resampler_shapes

    def inpaint_model(self):
        return False  # the 9 extra channels are built by the apply node, not ComfyUI's 5-channel inpaint path

    def get_model(self, state_dict, prefix="", device=None):
        return TryonSDXL(self, self.ip_layout, self.resampler_shapes, device=device)


def split_tryon_state_dict(state_dict: dict[str, torch.Tensor], input_name: str, source: WeightsFile | None = None):
    """Separates UNet, Resampler and IP weights and converts them to ComfyUI names.

    Every cross-attention gets an IP key/value module (TryonNet has one on all of them), so an IP weight missing from
    the file is reported by the weight check instead of silently leaving its block without IP attention. Returns the
    UNet config, the ComfyUI-named UNet weights, the IP layout, the Resampler weights, the extra (IP + Resampler)
    weights under the model's names, and the model name -> file name map for messages.
    """
    source = source or WeightsFile(input_name, "this file", TRYON_FIX)
    reject_single_file_checkpoint(state_dict, input_name)
    conv_in = state_dict.get("conv_in.weight")
    in_channels = None if conv_in is None else conv_in.shape[1]
    resampler = {k[len(RESAMPLER_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(RESAMPLER_PREFIX)}
    ip_weights = {k: v for k, v in state_dict.items() if k.endswith(IP_SUFFIXES)}
    if in_channels is not None and in_channels != TRYON_IN_CHANNELS or not resampler or not ip_weights:
        found = f"{in_channels} input channels" if in_channels is not None else "no conv_in"
        raise TryOnInputError(
            f"{input_name}: this is not an IDM-VTON TryonNet ({found}, "
            f"{'with' if resampler else 'without'} IP-Adapter Resampler, {len(ip_weights)} IP key/value weights; "
            f"TryonNet has {TRYON_IN_CHANNELS} input channels and both). Pick IDM-VTON's unet/ weights; an SDXL base "
            "or unet_encoder file belongs in the GarmentNet input."
        )
    unet_weights = {k: v for k, v in state_dict.items() if not k.startswith(RESAMPLER_PREFIX) and not k.endswith(IP_SUFFIXES)}
    unet_config = unet_config_from_diffusers(unet_weights, input_name)
    if unet_config["adm_in_channels"] is None:
        raise TryOnInputError(f"{input_name}: TryonNet must have SDXL's text-time add-embedding; this file has none.")
    comfy_unet, key_map = convert_unet_keys(unet_weights, unet_config, input_name, source=source)
    file_keys = file_key_names(key_map)
    ip_layout, extra = {}, {}
    for diffusers_key, comfy_key in key_map.items():
        if not diffusers_key.endswith(".attn2.to_k.weight"):
            continue
        prefix = diffusers_key[: -len("to_k.weight")]  # ...transformer_blocks.j.attn2.
        key = attention_key(comfy_key)
        width = _block_width(state_dict, prefix)
        if width is None:
            continue  # nothing of this block is in the file: the weight check names its missing tensors
        ip_layout[key] = width
        for projection in ("to_k_ip", "to_v_ip"):
            model_key = f"ip_adapter.{ip_module_name(key)}.{projection}.weight"
            file_key = f"{prefix}processor.{projection}.weight"
            file_keys[model_key] = file_key
            if file_key in ip_weights:
                extra[model_key] = ip_weights.pop(file_key)
    extra.update(ip_weights)  # IP weights of no cross-attention: unexpected, named by the weight check
    extra.update({f"ip_resampler.{k}": v for k, v in resampler.items()})
    return unet_config, comfy_unet, ip_layout, resampler, extra, file_keys


def _block_width(state_dict: dict[str, torch.Tensor], attn2_prefix: str) -> int | None:
    """The width of a transformer block, read from whichever of its tensors the file has (None: none of them)."""
    block = attn2_prefix[: -len("attn2.")]
    for name in ("attn2.processor.to_k_ip.weight", "attn2.processor.to_v_ip.weight", "attn2.to_k.weight", "attn2.to_q.weight", "attn1.to_q.weight"):
        tensor = state_dict.get(block + name)
        if tensor is not None and tensor.ndim == 2:
            return int(tensor.shape[0])
    tensor = state_dict.get(block + "norm1.weight")
    return int(tensor.shape[0]) if tensor is not None and tensor.ndim == 1 else None


def build_tryon_model(
    state_dict: dict[str, torch.Tensor], weight_dtype: str = "default", input_name: str = "tryon_net_name", file_name: str = "this file"
) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher around TryonSDXL, built and cast through ComfyUI's own dtype/offload machinery, after the weights
    are checked (models/weight_checks.py) against the network their config describes."""
    source = WeightsFile(input_name, file_name, TRYON_FIX)
    unet_config, comfy_unet, ip_layout, resampler, extra, file_keys = split_tryon_state_dict(state_dict, input_name, source)
    source = dataclasses.replace(source, file_keys=file_keys, file_prefixes={"ip_resampler.": RESAMPLER_PREFIX})
    patcher = build_model_patcher(TryonNetConfig(unet_config, ip_layout, resampler), comfy_unet, weight_dtype, extra, source=source)
    logging.info("IDM-VTON TryonNet loaded: %d IP cross-attentions, weight dtype %s", len(ip_layout), patcher.model_dtype())
    return patcher


def load_tryon_model(path: str, weight_dtype: str = "default", input_name: str = "tryon_net_name") -> comfy.model_patcher.ModelPatcher:
    """TryonNet from a weights file (IDM's unet/ .bin or .safetensors, or a converted single file); errors name `input_name`."""
    return build_tryon_model(read_state_dict(path, input_name), weight_dtype, input_name, os.path.basename(path))
