"""Human parsing with the SCHP ONNX exports IDM-VTON uses (ATR 18 labels at 512x512, LIP 20 labels at 473x473).

The models run through onnxruntime (CUDAExecutionProvider first when onnxruntime-gpu offers it, else the CPU), not
through ComfyUI's model manager: the sessions are small, are cached here per file (path and modification time) and
never take part in ComfyUI's VRAM offloading.

Pre- and post-processing follow the original exactly (DESIGN.md §4.1):
- the image, in BGR order, is warped to the model's S x S input by an aspect-preserving affine transform (no
  rotation): the box (0, 0, w-1, h-1) is widened or heightened to a square around its centre ((w-1)/2, (h-1)/2),
  which lands on ((S-1)/2, (S-1)/2), the square's side spanning S-1 output pixels (the SCHP transform); bilinear,
  black border;
- pixels / 255, then mean [0.406, 0.456, 0.485] and std [0.225, 0.224, 0.229] (ImageNet's, in BGR order);
- the model returns (parsing, fusion, edge); the second output's first batch item is the fused logits, upsampled
  bilinearly (align_corners) to S x S, warped back to w x h channel by channel (bilinear), then argmax.
- ATR labels: holes in upper-clothes + arms are filled with upper-clothes, except holes larger than 2000 pixels
  (at the original's 384x512; the threshold scales with the image area), and the arms keep their labels.
- label 18 (neck) = pixels ATR calls face (11) and LIP does not call face (LIP label 13).
"""

from __future__ import annotations

import dataclasses
import os
import threading

import cv2
import numpy as np

from ..errors import TryOnInputError

ATR_LABELS = (
    "background",
    "hat",
    "hair",
    "sunglasses",
    "upper_clothes",
    "skirt",
    "pants",
    "dress",
    "belt",
    "left_shoe",
    "right_shoe",
    "face",
    "left_leg",
    "right_leg",
    "left_arm",
    "right_arm",
    "bag",
    "scarf",
)
NECK = 18
ATR_CLASSES = 18
LIP_CLASSES = 20
LIP_FACE = 13
ATR_FACE, ATR_UPPER_CLOTHES, ATR_LEFT_ARM, ATR_RIGHT_ARM = 11, 4, 14, 15

MEAN_BGR = np.array([0.406, 0.456, 0.485], np.float32)
STD_BGR = np.array([0.225, 0.224, 0.229], np.float32)
HOLE_KEEP_AREA = 2000.0  # holes larger than this (pixels at 384x512) keep their labels
REFERENCE_AREA = 384 * 512  # the image size the original parses at


@dataclasses.dataclass(frozen=True)
class ParsingModel:
    """A loaded SCHP parsing network: its onnxruntime session, its square input size S and where it came from."""

    session: object  # onnxruntime.InferenceSession (shared between models loaded from the same file)
    path: str
    node_input: str  # the node input that chose the file, named in error messages
    onnx_input: str  # the graph's input name (`input.1` in the SCHP exports)
    size: int  # S: 512 for ATR, 473 for LIP
    fusion_output: str  # name of the second graph output (the fused logits)
    num_classes: int | None  # 18 (ATR) or 20 (LIP) when the graph declares it


_SESSIONS: dict[str, tuple[float, object]] = {}
_LOCK = threading.Lock()


def _providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def _session(path: str, input_name: str):
    """The onnxruntime session of `path`, cached until the file changes."""
    import onnxruntime

    if not os.path.isfile(path):
        raise TryOnInputError(
            f"{input_name}: the model file {path!r} does not exist. Put the SCHP parsing models "
            "(parsing_atr.onnx, parsing_lip.onnx) in ComfyUI/models/humanparsing/ and refresh."
        )
    mtime = os.path.getmtime(path)
    with _LOCK:
        cached = _SESSIONS.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            session = onnxruntime.InferenceSession(path, providers=_providers())
        except Exception as error:  # onnxruntime raises its own exception types for corrupt or non-ONNX files
            raise TryOnInputError(
                f"{input_name}: {os.path.basename(path)} is not a readable ONNX model ({error}). "
                "Download the SCHP parsing model again (parsing_atr.onnx / parsing_lip.onnx)."
            ) from error
        _SESSIONS[path] = (mtime, session)
        return session


def load_parsing_model(path: str, input_name: str) -> ParsingModel:
    """Loads (or reuses) the SCHP ONNX model at `path`; `input_name` is the node input named in errors."""
    session = _session(path, input_name)
    inputs, outputs = session.get_inputs(), session.get_outputs()
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
    classes = fusion_shape[1] if len(fusion_shape) == 4 and isinstance(fusion_shape[1], int) else None
    return ParsingModel(session, path, input_name, inputs[0].name, int(shape[2]), outputs[1].name, classes)


def square_warp(width: int, height: int, size: int) -> np.ndarray:
    """2x3 affine matrix from the w x h image to the S x S model input (aspect kept, centred, no rotation)."""
    box_w, box_h = width - 1.0, height - 1.0
    centre_x, centre_y = box_w * 0.5, box_h * 0.5
    side = max(box_w, box_h, 1.0)  # the box widened or heightened to the square's aspect ratio
    scale = (size - 1.0) / side
    dst = (size - 1.0) * 0.5
    return np.array([[scale, 0.0, dst - scale * centre_x], [0.0, scale, dst - scale * centre_y]], np.float64)


def _model_input(image_bgr: np.ndarray, warp: np.ndarray, size: int) -> np.ndarray:
    warped = cv2.warpAffine(image_bgr, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    normalised = (warped.astype(np.float32) / 255.0 - MEAN_BGR) / STD_BGR
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])


def _upsample_align_corners(logits: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) -> (size, size, C), bilinear with align_corners=True (corner samples map onto corner pixels)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))[None]
    up = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=True)
    return up[0].permute(1, 2, 0).numpy()


def fused_logits(model: ParsingModel, image_rgb: np.ndarray) -> np.ndarray:
    """(H, W, C) float logits of the fused SCHP head at the image's own size."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise TryOnInputError(f"image: expected an RGB image (H, W, 3), got {image_rgb.shape}.")
    height, width = image_rgb.shape[:2]
    image_bgr = np.ascontiguousarray(_as_uint8(image_rgb)[:, :, ::-1])
    warp = square_warp(width, height, model.size)
    outputs = model.session.run([model.fusion_output], {model.onnx_input: _model_input(image_bgr, warp, model.size)})
    fusion = np.asarray(outputs[0])
    if fusion.ndim != 4:
        raise TryOnInputError(
            f"{model.node_input}: {os.path.basename(model.path)} returned fused logits of shape {fusion.shape}; a SCHP model returns (1, classes, h, w)."
        )
    upsampled = _upsample_align_corners(fusion[0], model.size)
    inverse = cv2.invertAffineTransform(warp)
    channels = [
        cv2.warpAffine(upsampled[:, :, c], inverse, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        for c in range(upsampled.shape[2])
    ]
    return np.stack(channels, axis=-1)


def parse_image(model: ParsingModel, image_rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 labels of one model (no hole filling, no neck) for an (H, W, 3) RGB image (uint8 or float in [0, 1])."""
    return np.argmax(fused_logits(model, image_rgb), axis=2).astype(np.uint8)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return np.clip(np.round(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def _check_classes(model: ParsingModel, logits: np.ndarray, expected: int, kind: str) -> None:
    if logits.shape[2] != expected:
        raise TryOnInputError(
            f"{model.node_input}: {os.path.basename(model.path)} has {logits.shape[2]} labels, the {kind} "
            f"model has {expected}. Choose parsing_{kind.lower()}.onnx here."
        )


def _flood_fill_holes(binary: np.ndarray) -> np.ndarray:
    """255 where `binary` (uint8 0/255, with a zero border) is set or enclosed by it."""
    filled = binary.copy()
    cv2.floodFill(filled, np.zeros((binary.shape[0] + 2, binary.shape[1] + 2), np.uint8), (0, 0), 255)
    return cv2.bitwise_or(binary, cv2.bitwise_not(filled))


def fill_clothes_holes(labels: np.ndarray, keep_area: float | None = None) -> np.ndarray:
    """ATR labels with the holes of upper-clothes + arms set to upper-clothes; holes larger than `keep_area`
    (default 2000 px at 384x512, scaled with the image area) and the arms keep their labels."""
    if keep_area is None:
        keep_area = HOLE_KEEP_AREA * labels.shape[0] * labels.shape[1] / REFERENCE_AREA
    padded = np.pad(labels, 1, constant_values=0)
    arms = (padded == ATR_LEFT_ARM) | (padded == ATR_RIGHT_ARM)
    clothes_and_arms = np.where((padded == ATR_UPPER_CLOTHES) | arms, 255, 0).astype(np.uint8)
    filled = _flood_fill_holes(clothes_and_arms) > 0
    holes = (filled & (padded != ATR_UPPER_CLOTHES) & ~arms).astype(np.uint8) * 255
    contours, _ = cv2.findContours(holes, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)  # exact outlines
    kept = np.zeros_like(holes)
    for index, contour in enumerate(contours):
        if abs(cv2.contourArea(contour, True)) > keep_area:
            cv2.drawContours(kept, contours, index, color=255, thickness=-1)
    keep_original = (kept > 0) | arms
    result = np.where(filled & ~keep_original, ATR_UPPER_CLOTHES, padded)
    return result[1:-1, 1:-1].astype(np.uint8)


def parse_person(atr: ParsingModel, lip: ParsingModel | None, image_rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ATR labels after hole filling, plus the neck (18) where LIP is given; the mask rules' input."""
    atr_logits = fused_logits(atr, image_rgb)
    _check_classes(atr, atr_logits, ATR_CLASSES, "ATR")
    labels = fill_clothes_holes(np.argmax(atr_logits, axis=2).astype(np.uint8))
    if lip is not None:
        lip_logits = fused_logits(lip, image_rgb)
        _check_classes(lip, lip_logits, LIP_CLASSES, "LIP")
        lip_face = np.argmax(lip_logits, axis=2) == LIP_FACE
        labels[(labels == ATR_FACE) & ~lip_face] = NECK
    return labels


def clear_cache() -> None:
    """Drops the cached onnxruntime sessions (tests, or to free their memory)."""
    with _LOCK:
        _SESSIONS.clear()
