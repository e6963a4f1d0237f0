"""Builds a prepared try-on (ComfyUI side) and the matching diffusers reference inputs, in-process."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import comfy_host
import torch


@dataclass
class TryOnCase:
    result: object  # TryOnResult from apply_idm_vton
    tryon: object  # ModelPatcher (unpatched TryonNet)
    garment: object  # ModelPatcher (GarmentNet)
    positive: list
    negative: list
    garment_cond: list
    garment_pixels: torch.Tensor
    height: int
    width: int


def load_models(repo: pathlib.Path, garment_source: str = "loader"):
    import nodes

    pack = comfy_host.import_pack()
    weights_io = __import__(f"{comfy_host.PACK_MODULE}.models.weights_io", fromlist=["x"])
    tryon = pack.models.tryon_net.build_tryon_model(weights_io.read_state_dict(str(repo / "unet" / "diffusion_pytorch_model.bin"), "t"))
    if garment_source == "loader":
        garment = pack.models.garment_net.build_garment_model(
            weights_io.read_state_dict(str(repo / "unet_encoder" / "diffusion_pytorch_model.safetensors"), "g")
        )
    else:
        garment = nodes.CheckpointLoaderSimple().load_checkpoint("tiny_sdxl_fast.safetensors")[0]
    return tryon, garment


def prepare_case(
    tryon,
    garment,
    persons: int = 1,
    garments: int = 1,
    height: int = 128,
    width: int = 96,
    seed: int = 0,
    ip_strength: float = 1.0,
    garment_strength: float = 1.0,
    **options,
) -> TryOnCase:
    """A prepared try-on on random images; `options` are apply_idm_vton's keyword options (e.g. ip_image_preprocess).

    The garment is on the 1/255 grid, as ComfyUI's LoadImage gives an image file's pixels.
    """
    import nodes

    pack = comfy_host.import_pack()
    _, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint("tiny_sdxl_fast.safetensors")[:3]
    (vision,) = nodes.CLIPVisionLoader().load_clip("tiny_clip_vision.safetensors")
    encode = lambda text: nodes.CLIPTextEncode().encode(clip, text)[0]  # noqa: E731
    positive, negative = encode("model is wearing short sleeve round neck t-shirts"), encode("monochrome, lowres")
    garment_cond = encode("a photo of short sleeve round neck t-shirts")
    generator = torch.Generator().manual_seed(seed)
    person = torch.rand(persons, height, width, 3, generator=generator)
    garment_pixels = (torch.rand(garments, height, width, 3, generator=generator) * 255).round() / 255
    mask = torch.zeros(persons, height, width)
    mask[:, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
    densepose = torch.rand(persons, height, width, 3, generator=generator)
    result = pack.pipeline.idm_vton_apply.apply_idm_vton(
        tryon, garment, garment_cond, vae, person, mask, densepose, garment_pixels, vision, positive, negative, ip_strength, garment_strength, **options
    )
    return TryOnCase(result, tryon, garment, positive, negative, garment_cond, garment_pixels, height, width)
