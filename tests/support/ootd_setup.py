"""Builds a prepared OOTDiffusion try-on (ComfyUI side) and the matching diffusers reference models, in-process."""

from __future__ import annotations

import pathlib
import types

import comfy_host
import fixtures_ootd
import torch

HEIGHT, WIDTH = 256, 192  # latent 32x24: three halvings stay integral, as 768x1024's do


def fixture_models_dir(fixture_models_yaml: pathlib.Path) -> pathlib.Path:
    """The session's fixture models folder (comfy_host.write_fixture_models wrote the OOTDiffusion fixtures there)."""
    models = fixture_models_yaml.parent / "models"
    assert (models / "diffusion_models" / "ootd").is_dir(), models
    return models


def unet_path(models: pathlib.Path, kind: str, part: str) -> str:
    return str(fixtures_ootd.unet_folder(models / "diffusion_models", kind, part) / "diffusion_pytorch_model.safetensors")


def load_comfy_models(models: pathlib.Path, kind: str = "hd"):
    """(unet_vton, unet_garm, clip, vae, clip_vision) through the pack's loader and ComfyUI's stock loaders."""
    import comfy.clip_vision
    import comfy.sd

    comfy_host.register_tiny_models()
    load_ootd_unet = comfy_host.pack_module("models.ootd_unet").load_ootd_unet
    vton = load_ootd_unet(unet_path(models, kind, "vton"))
    garm = load_ootd_unet(unet_path(models, kind, "garm"))
    _, clip, vae = comfy.sd.load_checkpoint_guess_config(str(models / "checkpoints" / fixtures_ootd.SD15_CHECKPOINT))[:3]
    vision = comfy.clip_vision.load(str(models / "clip_vision" / fixtures_ootd.VISION_FILE))
    return types.SimpleNamespace(vton=vton, garm=garm, clip=clip, vae=vae, vision=vision)


def load_reference_models(models: pathlib.Path, kind: str = "hd"):
    """The same weights in diffusers / transformers: unet_vton, unet_garm, the text encoder, the CLIP vision encoder."""
    from tiny_models import build_image_encoder_l

    return types.SimpleNamespace(
        vton=fixtures_ootd.load_unet(models / "diffusion_models", kind, "vton"),
        garm=fixtures_ootd.load_unet(models / "diffusion_models", kind, "garm"),
        text=fixtures_ootd.load_text_encoder(models / "checkpoints" / fixtures_ootd.SD15_CHECKPOINT),
        vision=build_image_encoder_l(),  # the weights of the tiny ViT-L-shaped CLIP vision file (deterministic)
    )


def images(persons: int = 1, garments: int = 1, height: int = HEIGHT, width: int = WIDTH, seed: int = 0):
    """(person, mask, garment): random images on the 1/255 grid (an image file's pixels), a rectangular mask."""
    generator = torch.Generator().manual_seed(seed)
    person = (torch.rand(persons, height, width, 3, generator=generator) * 255).round() / 255
    garment = (torch.rand(garments, height, width, 3, generator=generator) * 255).round() / 255
    mask = torch.zeros(persons, height, width)
    mask[:, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
    return person, mask, garment


def apply(models, model_type: str = "hd", category: str = "upper_body", persons: int = 1, garments: int = 1, seed: int = 0):
    """A prepared try-on: apply_ootd's result and the pixels it was given."""
    person, mask, garment = images(persons, garments, seed=seed)
    apply_ootd = comfy_host.pack_module("pipeline.ootd_apply").apply_ootd
    result = apply_ootd(models.vton, models.garm, models.vae, models.clip, models.vision, person, mask, garment, model_type, category)
    return types.SimpleNamespace(result=result, person=person, mask=mask, garment=garment)
