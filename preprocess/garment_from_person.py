"""The garment a person wears, cut out of their photo onto white by its human-parsing labels (the IDM-VTON paper's
customisation when only the person photo exists; README, "Customise IDM-VTON on one photo pair").

The labels come from the colourised parsing map that 'Try-On Agnostic Mask' outputs (`parsing`, its fixed palette,
docs/preprocessing.md "Human parsing"): each pixel takes the label of the nearest palette colour, so a map that was
resized or saved lossily still decodes. The garment keeps its place in the photo; every other pixel is white. The
output has the try-on working size (the person's size rounded down to multiples of 8), as the person photo the
try-on runs on.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TryOnInputError
from .agnostic_mask import PALETTE
from .images import as_rgb, common_batch, repeat_to_batch, resize_image, resize_mask_nearest, to_uint8
from .labels import CATEGORIES, DRESS, PANTS, SKIRT, UPPER_CLOTHES, check_choice
from .tryon_inputs import working_size

# The ATR labels of the garment of each category. A dress is often parsed partly as upper clothes and skirt.
GARMENT_LABELS = {"upper_body": (UPPER_CLOTHES,), "lower_body": (SKIRT, PANTS), "dresses": (DRESS, UPPER_CLOTHES, SKIRT)}
WHITE = 1.0


def labels_from_colours(parsing: np.ndarray) -> np.ndarray:
    """(H, W) labels of a colourised parsing map (H, W, 3) uint8: the index of the nearest palette colour."""
    pixels = parsing.reshape(-1, 3).astype(np.int32)
    palette = PALETTE.astype(np.int32)
    codes = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(palette_codes)
    found = np.clip(np.searchsorted(palette_codes[order], codes), 0, len(order) - 1)
    labels = order[found]
    inexact = np.flatnonzero(palette_codes[labels] != codes)
    for start in range(0, len(inexact), 65536):  # colours off the palette (a resized map): the nearest one, in chunks
        chunk = inexact[start : start + 65536]
        distances = ((pixels[chunk, None, :] - palette[None]) ** 2).sum(axis=-1)
        labels[chunk] = distances.argmin(axis=1)
    return labels.reshape(parsing.shape[:2]).astype(np.uint8)


def garment_mask(parsing: np.ndarray, category: str, height: int, width: int) -> torch.Tensor:
    """(height, width) float mask, 1 on the garment labels of `category`, from a colourised parsing map (nearest resize)."""
    garment = torch.from_numpy(np.isin(labels_from_colours(parsing), GARMENT_LABELS[category])).float()
    return resize_mask_nearest(garment[None], height, width)[0]  # nearest picks pixels: the same as resizing the labels


def garment_from_person(person_image: torch.Tensor, parsing: torch.Tensor, category: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(garment on white (B, H, W, 3), garment mask (B, H, W)) at the person's try-on working size.

    `parsing` is the `parsing` output of 'Try-On Agnostic Mask' for the same photo (batch 1 or B, any size).
    """
    check_choice(category, CATEGORIES, "category")
    person = as_rgb(person_image, "person_image")
    colours = as_rgb(parsing, "parsing")
    batch = common_batch({"person_image": person.shape[0], "parsing": colours.shape[0]})
    height, width = working_size(*person.shape[1:3])
    person = repeat_to_batch(resize_image(person, height, width), batch)
    masks = []
    for index in range(colours.shape[0]):  # each parsing map once (a batch of 1 serves every person image)
        mask = garment_mask(to_uint8(colours[index]), category, height, width)
        if not mask.any():
            where = "" if batch == 1 else f" (image {index + 1} of the batch)"
            raise TryOnInputError(
                f"parsing: no {category} garment found{where}: none of its pixels has the labels of that category. Pick the "
                "category the person wears, and wire the `parsing` output of 'Try-On Agnostic Mask' run on this photo."
            )
        masks.append(mask)
    mask = repeat_to_batch(torch.stack(masks), batch).to(person)
    garment = person * mask[..., None] + WHITE * (1.0 - mask[..., None])
    return garment, mask
