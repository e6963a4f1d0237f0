"""The TorchScript DensePose model: load from models/densepose under ComfyUI's memory management, run, parse its output.

Files: the TorchScript exports of detectron2's DensePose R50/R101 FPN (`densepose_r50_fpn_dl.torchscript`,
`densepose_r101_fpn_dl.torchscript`, made with dajes/DensePose-TorchScript). Call contract: `model(image, bgr=True)`
with one uint8 image (3, H, W) or (H, W, 3), BGR; the model resizes internally (shorter side 800) and returns boxes
in the fed image's pixels. The exports ComfyUI users download return a tuple
`(boxes [N,4] xyxy, coarse_segm [N,2,h,w], fine_segm [N,25,h,w], u [N,25,h,w], v [N,25,h,w])` without scores: the
score threshold was applied inside the model at export time (detectron2's ROI_HEADS.SCORE_THRESH_TEST, the
exporter's `--min_score`). The exporter's newer version returns a dict (`pred_boxes`, `scores`,
`pred_densepose_coarse_segm`, `pred_densepose_fine_segm`, ...); then the node's threshold is applied to `scores`.
See docs/preprocessing.md ("DensePose").

Memory: the loaded module is a `comfy.model_patcher.ModelPatcher` (load device = ComfyUI's torch device, offload
device = the UNet offload device) held by `models/managed_models.py`, the pack's one cache of networks loaded by file
name: ComfyUI loads it before each run, counts it among its models and frees it like any other ("Free model and node
cache", another model needing the memory); once freed, the next run loads the file again. A file replaced under the
same name is loaded again.

Security, modestly: `torch.jit.load` does not run Python's pickle on arbitrary classes. A TorchScript archive holds
TorchScript source, constants and tensors; its data records are read by TorchScript's own unpickler, which
rebuilds only tensors, primitive containers and the archive's own TorchScript classes, so loading a file does not
import or call arbitrary Python: a plain pickle renamed .torchscript is not a zip archive and is refused, and a
pickle naming e.g. `builtins.exec` inside a TorchScript archive fails with "Unknown type name" before anything
runs (tests/server/test_reliability_preprocess.py). The archive's own code does run, in the TorchScript interpreter:
when the model is called, and already while it loads if the archive defines a scripted `__setstate__`. That
interpreter can call any registered operator: a malicious file can compute anything those ops allow, including
reading files the process can read (e.g. `aten::from_file`), and interpreter bugs have had
security fixes before. It is not a sandbox: use model files from sources you trust.
"""

from __future__ import annotations

import os

import comfy.model_management
import comfy.model_patcher
import torch

from ..errors import TryOnInputError
from ..model_folders import resolve
from ..preprocess.densepose import Detections
from .managed_models import managed_model
from .weight_checks import WeightsFile, check_tensor_values
from .weights_io import first_line

FOLDER = "densepose"
KIND = "densepose"
DOWNLOAD_HINT = (
    "Download densepose_r50_fpn_dl.torchscript (Hugging Face LayerNorm/DensePose-TorchScript-with-hint-image) into ComfyUI/models/densepose and refresh."
)


def load_torchscript(path: str, input_name: str = "densepose_model") -> torch.jit.ScriptModule:
    """`torch.jit.load` on the CPU, with a clear error for empty, corrupt or non-TorchScript files."""
    name = os.path.basename(path)
    if os.path.getsize(path) == 0:
        raise TryOnInputError(f"{input_name}: '{name}' is empty (an interrupted download?). {DOWNLOAD_HINT}")
    try:
        module = torch.jit.load(path, map_location="cpu")
    except Exception as error:  # torch raises RuntimeError/ValueError/zip errors for anything that is not a TorchScript archive
        detail = first_line(error, 200)  # some start with a blank line
        raise TryOnInputError(
            f"{input_name}: '{name}' is not a TorchScript model ({type(error).__name__}: {detail}). "
            f"A plain PyTorch checkpoint or detectron2 .pkl does not work here. {DOWNLOAD_HINT}"
        ) from error
    if not isinstance(module, torch.jit.ScriptModule):
        raise TryOnInputError(f"{input_name}: '{name}' is not a TorchScript module. {DOWNLOAD_HINT}")
    check_module_values(module, input_name, name)
    return module.eval()


def check_module_values(module: torch.nn.Module, input_name: str, name: str) -> None:
    """The archive's parameters floating point and finite, and its floating buffers finite (models/weight_checks.py).

    Its keys and shapes need no check: TorchScript refuses an archive whose code and tensors do not match. A frozen
    export keeps its weights as constants, out of reach here: `parse_output` also refuses a non-finite output.
    """
    source = WeightsFile(input_name, f"'{name}'", DOWNLOAD_HINT)
    buffers = [(key, buffer) for key, buffer in module.named_buffers() if buffer.is_floating_point()]
    check_tensor_values([*module.named_parameters(), *buffers], source)


def densepose_patcher(name: str, input_name: str = "densepose_model") -> comfy.model_patcher.ModelPatcher:
    """The ModelPatcher of the models/densepose file `name`, loaded onto ComfyUI's device (from the file when not held)."""
    path = resolve(FOLDER, name, input_name)

    def build(path: str) -> comfy.model_patcher.ModelPatcher:
        return comfy.model_patcher.ModelPatcher(
            load_torchscript(path, input_name),
            load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device(),
        )

    return managed_model(KIND, path, build, force_full_load=True)  # no comfy.ops casting inside: never split across devices


def run_densepose(patcher: comfy.model_patcher.ModelPatcher, image_bgr: torch.Tensor, input_name: str = "densepose_model") -> Detections:
    """Runs the model on one (3, H, W) uint8 BGR image on ComfyUI's device; detections come back on the CPU."""
    comfy.model_management.load_models_gpu([patcher], force_full_load=True)  # no comfy.ops casting inside: never split across devices
    module = patcher.model
    device = patcher.load_device
    if torch.device(device).type == "cpu":
        module.float()  # fp16 exports: half convolutions are slow or missing on the CPU (the exporter's own demo does this)
    with torch.inference_mode():
        output = module(image_bgr.to(device), True)
    return parse_output(output, input_name)


def parse_output(output, input_name: str = "densepose_model") -> Detections:
    """Detections from the export's tuple `(boxes, coarse, fine, u, v)` or its dict form (with `scores`)."""
    if isinstance(output, dict):
        keys = ("pred_boxes", "pred_densepose_coarse_segm", "pred_densepose_fine_segm")
        if not all(k in output for k in keys):
            raise TryOnInputError(f"{input_name}: the model returned a dict without {', '.join(keys)}; it is not a DensePose export.")
        boxes, coarse, fine = (output[k] for k in keys)
        scores = output.get("scores")
    elif isinstance(output, (tuple, list)) and len(output) == 5 and all(isinstance(t, torch.Tensor) for t in output):
        boxes, coarse, fine = output[0], output[1], output[2]
        scores = None
    else:
        raise TryOnInputError(
            f"{input_name}: the model's output is not DensePose's (boxes, coarse_segm, fine_segm, u, v). Use a DensePose TorchScript export. {DOWNLOAD_HINT}"
        )
    count = boxes.shape[0] if boxes.ndim == 2 else -1
    shapes_ok = (
        boxes.ndim == 2
        and boxes.shape[1] == 4
        and coarse.ndim == 4
        and coarse.shape[:2] == (count, 2)
        and fine.ndim == 4
        and fine.shape[:2] == (count, 25)
        and (scores is None or scores.shape == (count,))
    )
    if not shapes_ok:
        raise TryOnInputError(
            f"{input_name}: unexpected DensePose output shapes boxes {tuple(boxes.shape)}, coarse_segm "
            f"{tuple(coarse.shape)}, fine_segm {tuple(fine.shape)} (expected [N,4], [N,2,h,w], [N,25,h,w])."
        )
    if not all(bool(torch.isfinite(t).all()) for t in (boxes, coarse, fine, *(() if scores is None else (scores,)))):
        raise TryOnInputError(
            f"{input_name}: the model returned NaN or infinite values: the file's weights are damaged (or it runs in a precision it was not "
            f"exported for). {DOWNLOAD_HINT}"
        )
    cpu = {"device": "cpu", "dtype": torch.float32}
    return Detections(boxes.to(**cpu), coarse.to(**cpu), fine.to(**cpu), None if scores is None else scores.to(**cpu))
