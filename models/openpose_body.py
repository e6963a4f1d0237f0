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
from ..preprocess.images import check_resize, to_uint8
from ..preprocess.openpose_body import BOX_SIZE, NUM_HEATMAPS, NUM_PAFS, SCALE, decode_keypoints, prepare_input, upsample_maps
from .managed_models import managed_model
from .weight_checks import WeightsFile, check_state_dict
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


OPENPOSE_FIX = "Use the body model: download body_pose_model.pth again (lllyasviel/Annotators), not a hand, face or DWPose file."


def expected_shapes(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Every tensor of the body network with the shape the network needs: each conv's input channels are what the
    previous layers give (3 for the image; PAFs + heatmaps + features from stage 2 on), each branch ends in 38 PAFs or
    19 heatmaps; the other widths and the kernel sizes are read from the file's tensors (the tests' tiny networks are
    narrower than the real one)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, in_channels: int, out_channels: int | None = None) -> int:
        weight = state_dict.get(f"{name}.weight")
        found = tuple(weight.shape) if isinstance(weight, torch.Tensor) and weight.dim() == 4 else (0, 0, 3, 3)
        kernel = found[2] if found[2] == found[3] and found[2] % 2 == 1 else 3
        out = found[0] if out_channels is None else out_channels
        shapes[f"{name}.weight"] = (out, in_channels, kernel, kernel)
        shapes[f"{name}.bias"] = (out,)
        return out

    previous = 3
    for name in BACKBONE:
        if name != "pool":
            previous = conv(name, previous)
    features = previous
    for branch, channels in ((1, NUM_PAFS), (2, NUM_HEATMAPS)):
        for stage in range(1, STAGES + 1):
            layers = _stage_layers(stage, branch)
            previous = features if stage == 1 else NUM_PAFS + NUM_HEATMAPS + features
            for index, name in enumerate(layers):
                previous = conv(name, previous, channels if index == len(layers) - 1 else None)
    return shapes


def conv_shapes_from_state_dict(state_dict: dict[str, torch.Tensor], input_name: str, file_name: str = "the file") -> dict[str, tuple[int, ...]]:
    """Each conv's (out, in, k, k), after the weights are checked (models/weight_checks.py) against the network OpenPose
    defines: exactly its keys, shapes that chain into it, floating point and finite values."""
    expected = expected_shapes(state_dict)
    check_state_dict(state_dict, expected, WeightsFile(input_name, file_name, OPENPOSE_FIX))
    return {name: expected[f"{name}.weight"] for name in expected_conv_names()}


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
    height, width = image_rgb.shape[:2]
    scale = SCALE * BOX_SIZE / height
    check_resize(
        "image",
        (width, height),
        (round(width * scale), round(height * scale)),
        f"scaled to {round(SCALE * BOX_SIZE)}px high for OpenPose",
        "Crop the image to a less extreme aspect ratio, or set pose_model to none.",
    )
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
