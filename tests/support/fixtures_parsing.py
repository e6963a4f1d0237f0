"""Tiny SCHP-shaped parsing models (ONNX) and a synthetic person whose colours they parse to known labels.

The real SCHP exports take `input.1` of shape (1, 3, S, S) (ATR S = 512, LIP S = 473) and return the network's
`[[parsing, fusion], [edge]]` flattened to three outputs: parsing and fusion (1, classes, h, w), edge (1, 2, h, w),
at a quarter of the input resolution (ATR 128, LIP 119); ATR has 18 classes, LIP 20.

The tiny nets here keep that structure and are deterministic colour rules: a strided 1x1 convolution scores every
pixel against prototype colours (score = 2 x.c - |c|^2 in the normalised BGR space, i.e. the nearest prototype wins)
and each class takes the best softmax probability of its prototypes. A picture painted with `COLOURS` therefore parses to the
label map it was painted from. The first output (`parsing`) is the fused logits shifted by one class, so code
that reads the wrong output gets every label off by one.
"""

from __future__ import annotations

import io
import pathlib
import warnings

import numpy as np

ATR_SIZE, LIP_SIZE = 512, 473
ATR_CLASSES, LIP_CLASSES = 18, 20
MEAN_BGR = np.array([0.406, 0.456, 0.485], np.float32)
STD_BGR = np.array([0.225, 0.224, 0.229], np.float32)

NECK_COLOUR_KEY = "neck"
# RGB colour of each ATR label in synthetic pictures; "neck" is skin that ATR calls face and LIP does not
COLOURS: dict[int | str, tuple[int, int, int]] = {
    0: (255, 255, 255),
    1: (128, 0, 0),
    2: (128, 255, 0),
    3: (0, 0, 128),
    4: (255, 0, 0),
    5: (0, 128, 0),
    6: (0, 0, 255),
    7: (255, 0, 255),
    8: (128, 128, 0),
    9: (0, 128, 128),
    10: (128, 0, 128),
    11: (255, 128, 128),
    12: (255, 255, 0),
    13: (0, 255, 255),
    14: (255, 128, 0),
    15: (0, 255, 0),
    16: (0, 128, 255),
    17: (128, 255, 128),
    NECK_COLOUR_KEY: (255, 128, 255),
}
BLACK = (0, 0, 0)  # the warp's border: background for both nets
# ATR label -> LIP label of the same thing (LIP: 0 bg, 1 hat, 2 hair, 4 sunglasses, 5 upper-clothes, 6 dress, 9 pants,
# 11 scarf, 12 skirt, 13 face, 14/15 left/right arm, 16/17 left/right leg, 18/19 left/right shoe)
ATR_TO_LIP = {0: 0, 1: 1, 2: 2, 3: 4, 4: 5, 5: 12, 6: 9, 7: 6, 8: 0, 9: 18, 10: 19, 11: 13, 12: 16, 13: 17, 14: 14, 15: 15, 16: 0, 17: 11, NECK_COLOUR_KEY: 0}
ATR_NECK_LABEL = 11  # ATR has no neck: it calls the neck face
SHARPNESS = 10.0


def _prototypes(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) RGB prototype colours and (P,) class of each for the ATR or LIP net."""
    colours, classes = [BLACK], [0]
    for key, rgb in COLOURS.items():
        colours.append(rgb)
        atr = ATR_NECK_LABEL if key == NECK_COLOUR_KEY else key
        classes.append(atr if kind == "atr" else ATR_TO_LIP[key])
    return np.array(colours, np.float32), np.array(classes)


def build_colour_parser(kind: str):
    """The tiny torch net of `kind` ('atr' or 'lip'), returning [[parsing, fusion], [edge]] like SCHP."""
    import torch

    colours, classes = _prototypes(kind)
    num_classes = ATR_CLASSES if kind == "atr" else LIP_CLASSES
    centres = (colours[:, ::-1] / 255.0 - MEAN_BGR) / STD_BGR  # normalised BGR

    class ColourRuleParser(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.score = torch.nn.Conv2d(3, len(colours), 1, stride=4)
            with torch.no_grad():
                self.score.weight.copy_(torch.from_numpy(2.0 * centres)[:, :, None, None])
                self.score.bias.copy_(torch.from_numpy(-(centres**2).sum(1)))
            assign = np.zeros((1, num_classes, len(colours), 1, 1), np.float32)
            assign[0, classes, np.arange(len(colours))] = 1.0
            self.register_buffer("assign", torch.from_numpy(assign))

        def forward(self, x):
            # near one-hot per pixel, so that logits interpolated between two regions never favour a third class
            probabilities = torch.softmax(SHARPNESS * self.score(x), dim=1)
            fusion = (probabilities[:, None] * self.assign).amax(dim=2)
            parsing = torch.cat([fusion[:, -1:], fusion[:, :-1]], dim=1)  # off by one class: not the output to use
            edge = fusion[:, :2] - fusion[:, 2:4]
            return [[parsing, fusion], [edge]]

    return ColourRuleParser().eval()


def export_onnx(kind: str, parser=None) -> bytes:
    """The tiny net of `kind` (or `parser`, a net of that kind's size) as ONNX bytes (input `input.1`, 1x3xSxS)."""
    import torch

    size = ATR_SIZE if kind == "atr" else LIP_SIZE
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            build_colour_parser(kind) if parser is None else parser,
            (torch.zeros(1, 3, size, size),),
            buffer,
            input_names=["input.1"],
            output_names=["parsing", "fusion", "edge"],
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def write(models: pathlib.Path) -> None:
    """Writes models/humanparsing/parsing_atr.onnx and parsing_lip.onnx; existing files are kept."""
    folder = models / "humanparsing"
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("atr", "lip"):
        path = folder / f"parsing_{kind}.onnx"
        if not path.exists():
            path.write_bytes(export_onnx(kind))


# ----------------------------------------------------------------------------------------------
# A synthetic person
# ----------------------------------------------------------------------------------------------
NECK_MARK = 100  # in scene label maps: the neck (ATR 11, LIP not face); parse_person turns it into 18

# boxes (x0, y0, x1, y1) at 384x512, painted in this order
SCENE_BOXES = (
    (2, 162, 28, 222, 45),  # hair
    (11, 162, 45, 222, 110),  # face
    (1, 165, 18, 219, 40),  # hat
    (NECK_MARK, 177, 110, 207, 135),
    (4, 122, 135, 262, 300),  # upper clothes
    (15, 92, 140, 122, 330),  # right arm (image left), hand at its bottom
    (14, 262, 140, 292, 330),  # left arm
    (6, 132, 300, 252, 462),  # pants
    (9, 132, 462, 185, 490),  # left shoe
    (10, 199, 462, 252, 490),  # right shoe
    (16, 310, 240, 350, 300),  # bag
)
# OpenPose-18 keypoints at 384x512 (missing = (0, 0)): right shoulder/elbow/wrist 2, 3, 4; left 5, 6, 7
SCENE_KEYPOINTS = np.zeros((18, 2), np.float32)
SCENE_KEYPOINTS[[0, 1, 2, 3, 4, 5, 6, 7, 8, 11]] = [
    (192, 80),
    (192, 140),
    (107, 150),
    (107, 230),
    (107, 300),
    (277, 150),
    (277, 230),
    (277, 300),
    (160, 300),
    (224, 300),
]


def scene_labels(width: int = 384, height: int = 512) -> np.ndarray:
    """The synthetic person's label map (ATR labels, NECK_MARK for the neck) scaled to width x height."""
    labels = np.zeros((height, width), np.uint8)
    sx, sy = width / 384.0, height / 512.0
    for label, x0, y0, x1, y1 in SCENE_BOXES:
        labels[round(y0 * sy) : round(y1 * sy), round(x0 * sx) : round(x1 * sx)] = label
    return labels


def scene_keypoints(width: int = 384, height: int = 512) -> np.ndarray:
    """SCENE_KEYPOINTS in the pixel frame of a width x height picture (pixel centres map onto pixel centres)."""
    out = np.zeros_like(SCENE_KEYPOINTS)
    present = (SCENE_KEYPOINTS > 0).any(1)
    out[present] = (SCENE_KEYPOINTS[present] + 0.5) * [width / 384.0, height / 512.0] - 0.5
    return out


def paint(labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture of a scene label map in the colours the tiny nets parse."""
    image = np.zeros(labels.shape + (3,), np.uint8)
    for key, rgb in COLOURS.items():
        image[labels == (NECK_MARK if key == NECK_COLOUR_KEY else key)] = rgb
    return image


def expected_person_labels(labels: np.ndarray) -> np.ndarray:
    """What parse_person should return for paint(labels): the scene with the neck as label 18."""
    return np.where(labels == NECK_MARK, 18, labels).astype(np.uint8)
