"""OOTDiffusion's input preparation (README.md, "OOTDiffusion"): sizes, the binary mask, the grey-127 masked person.

The original binarises its mask at 127 (of 255), composites a grey of 127 over the person inside the mask
(`Image.composite(mask_gray, person, mask)`), and feeds person, masked person and garment at one size. Here the
person sets the size (rounded down to multiples of 8); mask (nearest) and garment (bilinear) follow it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TryOnInputError
from .images import as_mask, as_rgb, common_batch, repeat_to_batch, resize_image, resize_mask_nearest
from .tryon_inputs import working_size

MASK_THRESHOLD = 127  # of 255: the original's `mask >= 127 -> 1`
MASK_GREY = 127 / 255  # the original's grey inside the mask (127 of 255; -0.0039 in the VAE's [-1, 1])


@dataclass
class OOTDPixels:
    """Pixel inputs at the working size: person, mask and masked person with batch B; garment with batch 1 or B."""

    person: torch.Tensor  # (B, H, W, 3) in [0, 1]
    mask: torch.Tensor  # (B, H, W) in {0, 1}, 1 = repaint
    masked_person: torch.Tensor  # person outside the mask, grey 127 inside
    garment: torch.Tensor  # (1 or B, H, W, 3)


def binarize_mask(mask: torch.Tensor) -> torch.Tensor:
    """1 where the mask's 8-bit value is >= 127 (the original's threshold on its 'L' mask), else 0."""
    return ((mask.clamp(0, 1) * 255).round() >= MASK_THRESHOLD).float()


def prepare_ootd_pixels(person: torch.Tensor, mask: torch.Tensor, garment: torch.Tensor) -> OOTDPixels:
    """Validates and resizes the inputs to the person's size (rounded to /8) and one common batch."""
    person, garment = as_rgb(person, "person_image"), as_rgb(garment, "garment_image")
    mask = as_mask(mask, "mask")
    height, width = working_size(*person.shape[1:3], "OOTDiffusion")
    batch = common_batch({"person_image": person.shape[0], "mask": mask.shape[0], "garment_image": garment.shape[0]})
    person = repeat_to_batch(resize_image(person, height, width), batch)
    mask = binarize_mask(repeat_to_batch(resize_mask_nearest(mask, height, width), batch))
    empty = [index for index in range(batch) if float(mask[index].sum()) == 0]
    if empty:
        which = "the mask is empty" if batch == 1 else f"mask {', '.join(str(i + 1) for i in empty)} of the batch of {batch} is empty"
        raise TryOnInputError(f"mask: {which}, so nothing would be repainted. Draw or generate a mask over the garment area.")
    garment = resize_image(garment, height, width)
    inside = mask.unsqueeze(-1)
    masked_person = person * (1 - inside) + MASK_GREY * inside
    return OOTDPixels(person, mask, masked_person, garment)
