"""The SCHP human-parsing networks (ONNX, run by onnxruntime), held through ComfyUI's model management.

Each parsing file is one onnxruntime session inside a small `torch.nn.Module` holder, wrapped in a ComfyUI
`ModelPatcher` whose size is the file's size (models/managed_models.py keeps one per file version). ComfyUI loads it
like any model it manages, counting that size on its device: the session opens on ComfyUI's device, with
onnxruntime's CUDA provider when ComfyUI runs on an NVIDIA GPU and onnxruntime offers CUDAExecutionProvider
(onnxruntime-gpu), else on the CPU. When ComfyUI unloads it (memory pressure, "Unload models", "Free model and node
cache"), the session is closed, so nothing of it stays in RAM or VRAM, and the next run opens the file again.

The image processing around the network (warp, normalisation, logit decoding, hole fill, neck) is in
preprocess/human_parsing.py; docs/preprocessing.md ("Human parsing") gives the facts.
"""

from __future__ import annotations

import dataclasses
import os

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import numpy as np
import torch

from ..errors import TryOnInputError
from ..preprocess.human_parsing import labels_of, logits_at_image_size, model_input, person_labels
from ..preprocess.labels import ATR_CLASSES, LIP_CLASSES
from .managed_models import managed_model
from .onnx_runtime import import_onnxruntime

KIND = "parsing"
CALLBACK_KEY = "comfyui_tryon_onnx_session"


def session_providers(device: torch.device, input_name: str) -> list:
    """onnxruntime providers for a ComfyUI device: CUDA on that GPU when onnxruntime offers it, else the CPU."""
    onnxruntime = import_onnxruntime(input_name)
    device = torch.device(device)
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxSession(torch.nn.Module):
    """An onnxruntime session held as a ComfyUI model: `open` on load (on the load device), `close` on unload.

    It has no torch parameters; the patcher counts the file's size. The graph's description (input name, square
    size, fused-logits output, classes) is read once, when the file is first opened.
    """

    def __init__(self, path: str, input_name: str, device: torch.device):
        super().__init__()
        self.path = path
        self.session = None
        self.opened_on: list | None = None
        self.open(device, input_name)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        name = os.path.basename(path)
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise TryOnInputError(
                f"{input_name}: {name} is not a SCHP parsing model (expected one input of shape "
                f"(1, 3, S, S), got {[(i.name, i.shape) for i in inputs]}). Choose parsing_atr.onnx or parsing_lip.onnx."
            )
        if len(outputs) < 2:
            raise TryOnInputError(
                f"{input_name}: {name} is not a SCHP parsing model (expected the outputs parsing, fusion, "
                f"edge; got {len(outputs)}). Choose parsing_atr.onnx or parsing_lip.onnx."
            )
        fusion_shape = outputs[1].shape
        self.onnx_input: str = inputs[0].name
        self.size: int = int(shape[2])
        self.fusion_output: str = outputs[1].name
        self.num_classes: int | None = fusion_shape[1] if len(fusion_shape) == 4 and isinstance(fusion_shape[1], int) else None

    def open(self, device: torch.device, input_name: str = "parsing model") -> None:
        """Opens the session for `device` (a no-op when it is open there already)."""
        onnxruntime = import_onnxruntime(input_name)
        providers = session_providers(device, input_name)
        if self.session is not None and self.opened_on == providers:
            return
        self.session = None  # the old session's memory is released before the new one takes its own
        try:
            self.session = onnxruntime.InferenceSession(self.path, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for corrupt or non-ONNX files
            raise TryOnInputError(
                f"{input_name}: {os.path.basename(self.path)} is not a readable ONNX model ({error}). "
                "Download the SCHP parsing model again (parsing_atr.onnx / parsing_lip.onnx)."
            ) from error
        self.opened_on = providers

    def close(self) -> None:
        """Drops the session (onnxruntime frees its memory, on the GPU too)."""
        self.session = None
        self.opened_on = None

    def run(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.session.run([output], feeds)[0])


def _build(path: str, input_name: str) -> comfy.model_patcher.ModelPatcher:
    load_device = comfy.model_management.get_torch_device()
    holder = OnnxSession(path, input_name, load_device)
    patcher = comfy.model_patcher.ModelPatcher(
        holder, load_device=load_device, offload_device=comfy.model_management.unet_offload_device(), size=max(1, os.path.getsize(path))
    )
    patcher.add_callback_with_key(
        comfy.patcher_extension.CallbacksMP.ON_LOAD, CALLBACK_KEY, lambda patcher, device_to, *args: patcher.model.open(device_to, input_name)
    )
    patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_DETACH, CALLBACK_KEY, _close_on_unload)
    return patcher


def _close_on_unload(patcher: comfy.model_patcher.ModelPatcher, unpatch_all: bool = True) -> None:
    """ON_DETACH: closes the session when ComfyUI unloads the model (`unpatch_all`), not when it only detaches it to
    load it again (`load_models_gpu` on a loaded model) or drops a patcher object."""
    if unpatch_all:
        patcher.model.close()


@dataclasses.dataclass(frozen=True)
class ParsingModel:
    """A loaded SCHP parsing model: its patcher, the node input that chose it (named in error messages), and the graph."""

    patcher: comfy.model_patcher.ModelPatcher
    node_input: str
    path: str
    onnx_input: str  # `input.1` in the SCHP exports
    size: int  # S: 512 for ATR, 473 for LIP
    fusion_output: str  # the second output: the fused logits
    num_classes: int | None  # 18 (ATR) or 20 (LIP) when the graph declares it


def load_parsing_model(path: str, input_name: str) -> ParsingModel:
    """The SCHP ONNX model at `path` (from `model_folders.resolve`), loaded through ComfyUI's model management;
    `input_name` is the node input named in errors."""
    patcher = managed_model(KIND, path, lambda p: _build(p, input_name))
    graph = patcher.model
    return ParsingModel(patcher, input_name, graph.path, graph.onnx_input, graph.size, graph.fusion_output, graph.num_classes)


def fused_logits(model: ParsingModel, image_rgb: np.ndarray) -> np.ndarray:
    """(H, W, C) float logits of the fused SCHP head at the image's own size, for an (H, W, 3) RGB image."""
    comfy.model_management.load_models_gpu([model.patcher])  # a no-op while loaded; opens the session again after an unload
    batch, warp = model_input(image_rgb, model.size)
    fusion = model.patcher.model.run(model.fusion_output, {model.onnx_input: batch})
    if fusion.ndim != 4:
        raise TryOnInputError(
            f"{model.node_input}: {os.path.basename(model.path)} returned fused logits of shape {fusion.shape}; a SCHP model returns (1, classes, h, w)."
        )
    if not np.isfinite(fusion).all():  # the graph's weights are inside the ONNX file, out of reach before it runs
        raise TryOnInputError(
            f"{model.node_input}: {os.path.basename(model.path)} returned NaN or infinite values: its weights are damaged. "
            "Download the SCHP parsing model again (parsing_atr.onnx / parsing_lip.onnx, Space yisol/IDM-VTON: ckpt/humanparsing)."
        )
    height, width = image_rgb.shape[:2]
    return logits_at_image_size(fusion[0], warp, model.size, width, height)


def parse_image(model: ParsingModel, image_rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 labels of one model (no hole filling, no neck) for an (H, W, 3) RGB image (uint8 or float in [0, 1])."""
    return labels_of(fused_logits(model, image_rgb))


def _labels_checked(model: ParsingModel, image_rgb: np.ndarray, expected: int, kind: str) -> np.ndarray:
    logits = fused_logits(model, image_rgb)
    if logits.shape[2] != expected:
        raise TryOnInputError(
            f"{model.node_input}: {os.path.basename(model.path)} has {logits.shape[2]} labels, the {kind} "
            f"model has {expected}. Choose parsing_{kind.lower()}.onnx here."
        )
    return labels_of(logits)


def parse_person(atr: ParsingModel, lip: ParsingModel | None, image_rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ATR labels after hole filling, plus the neck (18) where LIP is given; the mask rules' input."""
    atr_labels = _labels_checked(atr, image_rgb, ATR_CLASSES, "ATR")
    lip_labels = None if lip is None else _labels_checked(lip, image_rgb, LIP_CLASSES, "LIP")
    return person_labels(atr_labels, lip_labels)
