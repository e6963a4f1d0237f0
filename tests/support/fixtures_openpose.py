"""Tiny OpenPose body fixture: the real body_pose_model.pth key names and file format, with reduced channel widths."""

from __future__ import annotations

import pathlib

import torch
from tiny_models import LAYOUTS

KEYS_TSV = LAYOUTS / "openpose_body_pose_model.keys.tsv"
FIXTURE_NAME = "body_pose_model.pth"

# real width -> tiny width; 3 (RGB in), 38 (PAFs) and 19 (heatmaps) stay; the stage input 185 = 38 + 19 + F
TINY_WIDTHS = {64: 4, 128: 8, 256: 8, 512: 8}
TINY_FEATURES = TINY_WIDTHS[128]


def reference_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of the real checkpoint, in its order (184 tensors)."""
    rows = [line.split("\t") for line in KEYS_TSV.read_text().splitlines() if line.strip()]
    return [(key, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())) for key, shape in rows]


def _tiny(width: int) -> int:
    if width == 185:
        return 38 + 19 + TINY_FEATURES
    return TINY_WIDTHS.get(width, width)


def random_state_dict(shapes: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """He-initialised random weights (small random biases) for the given shapes, in order."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes:
        if key.endswith(".weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.01
    return state


def tiny_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """The real keys with reduced widths (kernel sizes and the 38/19 outputs kept)."""
    out = []
    for key, shape in reference_shapes():
        if len(shape) == 4:
            out.append((key, (_tiny(shape[0]), _tiny(shape[1]), shape[2], shape[3])))
        else:
            out.append((key, (_tiny(shape[0]),)))
    return out


def write(models: pathlib.Path) -> None:
    """Writes models/openpose/body_pose_model.pth (a plain pickled state dict, like the real one); existing files are kept."""
    path = models / "openpose" / FIXTURE_NAME
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture_state_dict(), path)


def fixture_state_dict() -> dict[str, torch.Tensor]:
    """Random tiny weights, except a zero final heatmap layer: the fixture deterministically finds nobody on any image
    (random heatmaps would give image- and platform-dependent spurious people)."""
    state = random_state_dict(tiny_shapes(), seed=0)
    state["Mconv7_stage6_L2.weight"].zero_()
    state["Mconv7_stage6_L2.bias"].zero_()
    return state
