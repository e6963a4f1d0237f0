"""The CMU OpenPose body network (COCO-18) in torch, its loading, and running it under ComfyUI's model management.

The real `body_pose_model.pth` is a plain state dict with flat keys (`conv1_1.weight`, `Mconv7_stage6_L2.bias`, ...);
the module below registers its convolutions under exactly those names, with channel widths read from the state dict.
The file is read by models/weights_io.py, through `comfy.utils.load_torch_file(path, safe_load=True)` (pickles with
weights_only=True only, so no code in a file ever runs; ComfyUI's --disable-mmap and safe loading apply). The network
is a ComfyUI `ModelPatcher` (models/managed_models.py): ComfyUI loads it onto its device, offloads it and frees it like
any model it manages, never moved behind its back. Its convolutions are ComfyUI's ops, so a partial (low-VRAM) load
runs too. The input preparation and the keypoint
decoding are in preprocess/openpose_body.py (docs/preprocessing.md, "Pose").
"""

from __future__ import annotations

import os

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import numpy as np
import torch
from torch import nn

from ..errors import TryOnInputError
from ..preprocess.images import to_uint8
from ..preprocess.openpose_body import NUM_HEATMAPS, NUM_PAFS, decode_keypoints, prepare_input, upsample_maps
from .managed_models import managed_model
from .weights_io import read_state_dict

KIND = "openpose"

# Backbone: VGG-19's first ten 3x3 convs (max-pool after conv1_2, conv2_2, conv3_4), then the two CPM convs.
BACKBONE = (
    "conv1_1",
    "conv1_2",
    "pool",
    "conv2_1",
    "conv2_2",
    "pool",
    "conv3_1",
    "conv3_2",
    "conv3_3",
    "conv3_4",
    "pool",
    "conv4_1",
    "conv4_2",
    "conv4_3_CPM",
    "conv4_4_CPM",
)
STAGES = 6


def _stage_layers(stage: int, branch: int) -> list[str]:
    """Conv names of one stage branch (branch 1 = PAFs, 2 = heatmaps), in order; the last has no ReLU."""
    if stage == 1:
        return [f"conv5_{i}_CPM_L{branch}" for i in range(1, 6)]
    return [f"Mconv{i}_stage{stage}_L{branch}" for i in range(1, 8)]


def expected_conv_names() -> list[str]:
    """Every convolution of the body network, in the real state dict's naming."""
    names = [n for n in BACKBONE if n != "pool"]
    for branch in (1, 2):
        for stage in range(1, STAGES + 1):
            names += _stage_layers(stage, branch)
    return names


class OpenPoseBodyNet(nn.Module):
    """The 6-stage CPM body network: returns (PAFs (B,38,h,w), heatmaps (B,19,h,w)) at 1/8 of the input size."""

    def __init__(self, conv_shapes: dict[str, tuple[int, ...]], operations=comfy.ops.disable_weight_init):
        super().__init__()
        for name in expected_conv_names():
            out_ch, in_ch, k, _ = conv_shapes[name]
            self.add_module(name, operations.Conv2d(in_ch, out_ch, k, padding=k // 2))
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def _branch(self, x: torch.Tensor, names: list[str]) -> torch.Tensor:
        for i, name in enumerate(names):
            x = getattr(self, name)(x)
            if i < len(names) - 1:
                x = torch.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for name in BACKBONE:
            x = self.pool(x) if name == "pool" else torch.relu(getattr(self, name)(x))
        features = x
        pafs = self._branch(features, _stage_layers(1, 1))
        heatmaps = self._branch(features, _stage_layers(1, 2))
        for stage in range(2, STAGES + 1):
            joined = torch.cat([pafs, heatmaps, features], dim=1)
            pafs = self._branch(joined, _stage_layers(stage, 1))
            heatmaps = self._branch(joined, _stage_layers(stage, 2))
        return pafs, heatmaps


def conv_shapes_from_state_dict(state_dict: dict[str, torch.Tensor], input_name: str, file_name: str = "the file") -> dict[str, tuple[int, ...]]:
    """Each conv's (out, in, k, k) read from the weights, checked to chain into the network OpenPose defines (and every
    tensor floating point and finite)."""
    names = expected_conv_names()
    expected = {f"{n}.{p}" for n in names for p in ("weight", "bias")}
    missing = sorted(expected - set(state_dict))
    extra = sorted(set(state_dict) - expected)
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise TryOnInputError(
            f"{input_name}: {file_name} is not the OpenPose body model body_pose_model.pth ({detail}; {len(missing)} missing, "
            f"{len(extra)} unexpected keys). Pick the body model (lllyasviel/Annotators body_pose_model.pth), not a hand/face/DWPose file."
        )
    _check_values(state_dict, input_name, file_name)
    shapes = {}
    for name in names:
        weight, bias = state_dict[f"{name}.weight"], state_dict[f"{name}.bias"]
        if weight.dim() != 4 or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 == 0 or tuple(bias.shape) != (weight.shape[0],):
            raise TryOnInputError(f"{input_name}: {file_name} has a malformed layer {name} ({tuple(weight.shape)}); download body_pose_model.pth again.")
        shapes[name] = tuple(weight.shape)

    def out(name: str) -> int:
        return shapes[name][0]

    def check(name: str, in_channels: int) -> None:
        if shapes[name][1] != in_channels:
            raise TryOnInputError(
                f"{input_name}: {file_name} layer {name} takes {shapes[name][1]} channels where {in_channels} arrive; "
                "the file is not a consistent OpenPose body model."
            )

    previous = 3
    for name in BACKBONE:
        if name != "pool":
            check(name, previous)
            previous = out(name)
    features = previous
    for branch, channels in ((1, NUM_PAFS), (2, NUM_HEATMAPS)):
        for stage in range(1, STAGES + 1):
            layers = _stage_layers(stage, branch)
            previous = features if stage == 1 else NUM_PAFS + NUM_HEATMAPS + features
            for name in layers:
                check(name, previous)
                previous = out(name)
            if previous != channels:
                raise TryOnInputError(
                    f"{input_name}: {file_name} stage {stage} outputs {previous} channels instead of {channels}; this is not the COCO-18 OpenPose body model."
                )
    return shapes


def _check_values(state_dict: dict[str, torch.Tensor], input_name: str, file_name: str) -> None:
    """Every tensor floating point and finite: a max and a min per tensor (NaN propagates through both), no copies;
    about 0.2 s for the 52 M weights on a busy 2-core CPU."""
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point():
            raise TryOnInputError(
                f"{input_name}: {file_name} holds {tensor.dtype} values in {key}, not floating-point weights; download body_pose_model.pth again."
            )
        if tensor.numel() and not (torch.isfinite(tensor.amax()) and torch.isfinite(tensor.amin())):
            raise TryOnInputError(f"{input_name}: {file_name} holds NaN or infinite values in {key}; download body_pose_model.pth again.")


def body_pose_net_from_state_dict(state_dict: dict[str, torch.Tensor], input_name: str, file_name: str = "the state dict") -> OpenPoseBodyNet:
    """The network sized by the state dict, loaded strictly (float32, eval mode, on the CPU)."""
    shapes = conv_shapes_from_state_dict(state_dict, input_name, file_name)
    net = OpenPoseBodyNet(shapes)
    net.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return net.eval().requires_grad_(False)


def _build(path: str, input_name: str) -> comfy.model_patcher.ModelPatcher:
    net = body_pose_net_from_state_dict(read_state_dict(path, input_name), input_name, os.path.basename(path))
    return comfy.model_patcher.ModelPatcher(
        net, load_device=comfy.model_management.get_torch_device(), offload_device=comfy.model_management.unet_offload_device()
    )


def load_body_pose_model(path: str, input_name: str) -> comfy.model_patcher.ModelPatcher:
    """The OpenPose body network of `path` (body_pose_model.pth or a .safetensors copy, found by
    `model_folders.resolve`) as a loaded ComfyUI patcher; `input_name` is the node input named in errors."""
    return managed_model(KIND, path, lambda p: _build(p, input_name))


def run_body_network(patcher: comfy.model_patcher.ModelPatcher, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps (H,W,19), PAFs (H,W,38)) at the image size, for an (H,W,3) RGB image (uint8, or float in [0, 1]), on
    the device ComfyUI loaded the network to."""
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or min(image_rgb.shape[:2]) < 2:
        raise TryOnInputError(f"image: OpenPose needs an RGB image (H, W, 3), got shape {tuple(image_rgb.shape)}.")
    if image_rgb.dtype != np.uint8:
        image_rgb = to_uint8(image_rgb)
    batch, scaled_hw, _ = prepare_input(np.ascontiguousarray(image_rgb[:, :, ::-1]))
    comfy.model_management.load_models_gpu([patcher])  # cheap while loaded; loads it again if ComfyUI unloaded it meanwhile
    with torch.inference_mode():
        pafs, heatmaps = patcher.model(torch.from_numpy(batch).to(patcher.load_device))
    size = image_rgb.shape[:2]
    heat = upsample_maps(heatmaps[0].float().cpu().numpy(), scaled_hw, size)
    paf = upsample_maps(pafs[0].float().cpu().numpy(), scaled_hw, size)
    return heat, paf


def detect_body_keypoints(patcher: comfy.model_patcher.ModelPatcher, image_rgb: np.ndarray) -> np.ndarray | None:
    """The first person's 18 COCO keypoints as (18, 2) float32 pixel (x, y), missing = (0, 0); None when nobody is found."""
    heatmaps, pafs = run_body_network(patcher, image_rgb)
    return decode_keypoints(heatmaps, pafs, comfy.model_management.throw_exception_if_processing_interrupted)
