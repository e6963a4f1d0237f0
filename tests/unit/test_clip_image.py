"""The IP image preprocessing is the original's: transformers' PIL CLIPImageProcessor on the same pixels, within 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from reference_idm import original_clip_processor as original_processor

SIZES = [(1024, 768), (512, 512), (384, 1024), (150, 100), (517, 333)]  # (height, width): IDM's 3:4, square, wide, < 224, odd


def garment_photo(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth garment-like picture plus noise (uint8), so that both resampling and edges matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / 17.0 + c) * np.cos(y / 23.0 - c) for c in range(3)], axis=-1) * 100 + 128
    return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)


def as_loaded_by_comfyui(pixels: np.ndarray) -> torch.Tensor:
    """What ComfyUI's LoadImage gives for these file pixels: float32 v / 255, (1, H, W, 3)."""
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]


@pytest.mark.parametrize("height,width", SIZES, ids=[f"{w}x{h}" for h, w in SIZES])
def test_pixel_values_equal_the_original_clip_image_processor(pack, height, width):
    from comfyui_tryon.preprocess.clip_image import clip_pixel_values

    pixels = garment_photo(height, width, seed=height * width)
    expected = original_processor()(images=[Image.fromarray(pixels)], return_tensors="np")["pixel_values"]
    ours = clip_pixel_values(as_loaded_by_comfyui(pixels))
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
    assert np.abs(ours.numpy() - expected).max() <= 1e-6


def test_a_batch_is_processed_image_by_image_and_alpha_is_dropped(pack):
    from comfyui_tryon.preprocess.clip_image import clip_pixel_values

    photos = [garment_photo(300, 240, seed) for seed in (1, 2)]
    batch = torch.cat([as_loaded_by_comfyui(p) for p in photos])
    with_alpha = torch.cat([batch, torch.rand(2, 300, 240, 1)], dim=-1)
    expected = original_processor()(images=[Image.fromarray(p) for p in photos], return_tensors="np")["pixel_values"]
    assert np.abs(clip_pixel_values(with_alpha).numpy() - expected).max() <= 1e-6


def test_comfyui_resize_differs_from_the_original_which_is_why_the_default_is_original(pack):
    import comfy.clip_vision
    from comfyui_tryon.preprocess.clip_image import IP_IMAGE_PREPROCESS, clip_pixel_values

    assert IP_IMAGE_PREPROCESS == ("original", "comfyui")
    image = as_loaded_by_comfyui(garment_photo(1024, 768, seed=5))
    comfy_pixels = comfy.clip_vision.clip_preprocess(image, size=224)
    assert (comfy_pixels - clip_pixel_values(image)).abs().max().item() > 1e-2


def test_resize_and_crop_geometry_follow_transformers(pack):
    from comfyui_tryon.preprocess.clip_image import centre_crop_offsets, resized_size

    assert resized_size(1024, 768) == (298, 224)  # int(224 * 1024 / 768) = 298 (ComfyUI's round() gives 299)
    assert resized_size(384, 1024) == (224, 597)
    assert resized_size(150, 100) == (336, 224)
    assert resized_size(512, 512) == (224, 224)
    assert centre_crop_offsets(298, 224) == (37, 0)
    assert centre_crop_offsets(224, 597) == (0, 186)


def test_uint8_conversion_gives_back_the_file_pixels_an_original_user_feeds(pack, tmp_path):
    """LoadImage's v / 255 rounds back to v for every level; the pixel values equal those of the PNG read by PIL."""
    from comfyui_tryon.preprocess.clip_image import clip_pixel_values
    from comfyui_tryon.preprocess.images import to_uint8

    levels = np.arange(256, dtype=np.uint8)
    assert np.array_equal(to_uint8(levels.astype(np.float32) / 255.0), levels)
    path = tmp_path / "garment.png"
    Image.fromarray(garment_photo(640, 480, seed=9)).save(path)
    loaded = np.array(Image.open(path).convert("RGB")).astype(np.float32) / 255.0  # ComfyUI's LoadImage
    expected = original_processor()(images=[Image.open(path)], return_tensors="np")["pixel_values"]
    assert np.abs(clip_pixel_values(torch.from_numpy(loaded)[None]).numpy() - expected).max() <= 1e-6
    # between levels, rounding (not SaveImage's truncation) gives the nearest uint8
    assert to_uint8(np.float32([50.99999 / 255, 0.5 / 255 + 1e-4])).tolist() == [51, 1]
