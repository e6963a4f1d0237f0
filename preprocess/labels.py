"""The vocabulary the try-on nodes share: garment categories, the human-parsing labels, the "none" choice.

The parsing labels are those of the SCHP ATR model (`parsing_atr.onnx`), plus the neck (18) that the mask rules add
from the LIP model (docs/preprocessing.md, "Human parsing").
"""

from __future__ import annotations

from collections.abc import Collection

from ..errors import TryOnInputError

# What the garment replaces (IDM-VTON / OOTDiffusion DressCode categories), in the order the nodes list them.
CATEGORIES = ("upper_body", "lower_body", "dresses")

# The choice that switches an optional model off in a node's model list.
NONE = "none"

# ATR labels, by value (0..17).
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
(
    BACKGROUND,
    HAT,
    HAIR,
    SUNGLASSES,
    UPPER_CLOTHES,
    SKIRT,
    PANTS,
    DRESS,
    BELT,
    LEFT_SHOE,
    RIGHT_SHOE,
    FACE,
    LEFT_LEG,
    RIGHT_LEG,
    LEFT_ARM,
    RIGHT_ARM,
    BAG,
    SCARF,
) = range(len(ATR_LABELS))
ATR_CLASSES = len(ATR_LABELS)
NECK = 18  # not an ATR label: the pixels ATR calls face and LIP does not

# LIP (parsing_lip.onnx): 20 labels; only its face label is used (to tell the neck from the face).
LIP_CLASSES = 20
LIP_FACE = 13


def check_choice(value: str, choices: Collection[str], input_name: str) -> str:
    """`value` when it is one of `choices`, else a TryOnInputError naming the node input and the choices."""
    if value not in choices:
        raise TryOnInputError(f"{input_name}: must be one of {', '.join(choices)}, got {value!r}.")
    return value
