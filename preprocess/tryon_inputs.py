"""IDM-VTON's input preparation (docs/idm_vton.md, "Input preparation"): sizes, binary mask, masked person, the 9 extra channels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import TryOnInputError
from .images import as_mask, as_rgb, common_batch, repeat_to_batch, resize_image, resize_mask_nearest

LATENT_FACTOR = 8
MIN_SIDE = 64


@dataclass
class TryOnPixels:
    """Pixel inputs at the working size, all with the same batch."""

    person: torch.Tensor  # (B, H, W, 3) in [0, 1]
    mask: torch.Tensor  # (B, H, W) in {0, 1}, 1 = repaint
    masked_person: torch.Tensor  # person where mask < 0.5, mid-grey (0 in [-1, 1]) elsewhere
    densepose: torch.Tensor  # (B, H, W, 3)
    garment: torch.Tensor  # (B or 1, H, W, 3)


def working_size(height: int, width: int, family: str = "IDM-VTON") -> tuple[int, int]:
    """The person size rounded down to multiples of 8 (the VAE's factor); `family` names the model in the error."""
    if min(height, width) < MIN_SIDE:
        raise TryOnInputError(
            f"person_image: {width}x{height} is too small; {family} needs at least {MIN_SIDE}px a side "
            "(it was trained at 768x1024). Upscale or crop a larger region."
        )
    return height - height % LATENT_FACTOR, width - width % LATENT_FACTOR


def binarize_mask(mask: torch.Tensor) -> torch.Tensor:
    """1 where mask >= 0.5 (repaint), else 0, as the original."""
    return (mask >= 0.5).float()


@dataclass
class SizedPersonAndMask:
    """The person and its binary mask at the working size, repeated to the batch every input shares."""

    person: torch.Tensor  # (B, H, W, 3)
    mask: torch.Tensor  # (B, H, W) in {0, 1}
    others: dict[str, torch.Tensor]  # the other images, checked RGB, not resized
    batch: int
    height: int
    width: int


def size_person_and_mask(
    person: torch.Tensor, mask: torch.Tensor, others: dict[str, torch.Tensor], binarize: Callable[[torch.Tensor], torch.Tensor], family: str
) -> SizedPersonAndMask:
    """Checks person, `others` (input name -> image) and mask, finds the working size (the person's, rounded to /8)
    and the batch they share, resizes the person (bilinear) and the mask (nearest, then `binarize`), and refuses a
    mask that is empty in any item of the batch."""
    person = as_rgb(person, "person_image")
    others = {name: as_rgb(image, name) for name, image in others.items()}
    mask = as_mask(mask, "mask")
    height, width = working_size(*person.shape[1:3], family)
    batch = common_batch({"person_image": person.shape[0], "mask": mask.shape[0], **{name: image.shape[0] for name, image in others.items()}})
    person = repeat_to_batch(resize_image(person, height, width), batch)
    mask = binarize(repeat_to_batch(resize_mask_nearest(mask, height, width), batch))
    empty = [index for index in range(batch) if float(mask[index].sum()) == 0]
    if empty:
        which = "the mask is empty" if batch == 1 else f"mask {', '.join(str(i + 1) for i in empty)} of the batch of {batch} is empty"
        raise TryOnInputError(f"mask: {which}, so nothing would be repainted. Draw or generate a mask over the garment area.")
    return SizedPersonAndMask(person, mask, others, batch, height, width)


def grey_inside_mask(person: torch.Tensor, mask: torch.Tensor, grey: float) -> torch.Tensor:
    """The masked person: the person outside the binary mask, `grey` inside."""
    inside = mask.unsqueeze(-1)
    return person * (1 - inside) + grey * inside


def prepare_pixels(person: torch.Tensor, mask: torch.Tensor, densepose: torch.Tensor, garment: torch.Tensor) -> TryOnPixels:
    """Validates and resizes every input to the person's size (rounded to /8) and one common batch.

    Person and DensePose are resized bilinearly, the mask nearest; the garment is resized to the same
    size (IDM-VTON feeds a 768x1024 garment next to a 768x1024 person).
    """
    sized = size_person_and_mask(person, mask, {"densepose_image": densepose, "garment_image": garment}, binarize_mask, "IDM-VTON")
    densepose = repeat_to_batch(resize_image(sized.others["densepose_image"], sized.height, sized.width), sized.batch)
    garment = resize_image(sized.others["garment_image"], sized.height, sized.width)
    return TryOnPixels(sized.person, sized.mask, grey_inside_mask(sized.person, sized.mask, 0.5), densepose, garment)


def latent_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, 1, H/8, W/8) by nearest neighbour, as the original."""
    height, width = mask.shape[1] // LATENT_FACTOR, mask.shape[2] // LATENT_FACTOR
    return torch.nn.functional.interpolate(mask.unsqueeze(1), size=(height, width), mode="nearest")


def tryon_concat(mask: torch.Tensor, masked_person_latent: torch.Tensor, densepose_latent: torch.Tensor) -> torch.Tensor:
    """TryonNet's 9 extra channels: [mask 1 | masked-person latent 4 | DensePose latent 4] (latents scaled)."""
    return torch.cat([latent_mask(mask).to(masked_person_latent), masked_person_latent, densepose_latent.to(masked_person_latent)], dim=1)
