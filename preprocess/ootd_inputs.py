"""OOTDiffusion's input preparation (README.md, "OOTDiffusion"): sizes, the binary mask, the grey-127 masked person.

The original binarises its mask at 127 (of 255), composites a grey of 127 over the person inside the mask
(`Image.composite(mask_gray, person, mask)`), and feeds person, masked person and garment at one size. Here the
person sets the size (rounded down to multiples of 8); mask (nearest) and garment (bilinear) follow it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .images import resize_image
from .tryon_inputs import grey_inside_mask, size_person_and_mask

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
    sized = size_person_and_mask(person, mask, {"garment_image": garment}, binarize_mask, "OOTDiffusion")
    garment = resize_image(sized.others["garment_image"], sized.height, sized.width)
    return OOTDPixels(sized.person, sized.mask, grey_inside_mask(sized.person, sized.mask, MASK_GREY), garment)
