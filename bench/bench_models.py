"""Random-weight IDM-VTON models and inputs for the benchmark: the real configs, optionally at reduced widths.

Both sides get the same weights: the diffusers reference (tests/support/reference_idm.py) is built from
models/layouts/idm_vton_hf_layout/*.config.json, and our ComfyUI MODELs are loaded from its state dicts.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import torch

LAYOUT = pathlib.Path(__file__).resolve().parents[1] / "models" / "layouts" / "idm_vton_hf_layout"
TEXT_TOKENS, CLIP_TOKENS = 77, 257


@dataclass(frozen=True)
class BenchConfig:
    name: str
    widths: tuple[int, int, int]  # block_out_channels; the real SDXL is 320/640/1280 (dim_head 64 everywhere)
    latent: tuple[int, int]  # latent H, W; the real 1024x768 image is 128x96
    steps: int
    cfg: float = 2.0

    def describe(self) -> str:
        h, w = self.latent
        return (
            f"{self.name}: widths {'/'.join(map(str, self.widths))} (dim_head 64), real depths (layers_per_block 2, "
            f"transformer layers 1/2/10 = 70 blocks per UNet), context 2048, IP Resampler 1280x4 layers, latent {h}x{w} "
            f"(image {h * 8}x{w * 8}), {self.steps} steps euler, CFG {self.cfg}"
        )


CONFIGS = {
    "cpu-mid": BenchConfig("cpu-mid", (64, 128, 192), (64, 48), 4),
    "cpu-real-latent": BenchConfig("cpu-real-latent", (64, 128, 192), (128, 96), 2),
    "gpu-real": BenchConfig("gpu-real", (320, 640, 1280), (128, 96), 30),
}


def unet_config(kind: str, widths: tuple[int, int, int]) -> dict:
    """The stored IDM-VTON config ('unet' = TryonNet, 'unet_encoder' = GarmentNet) with the given widths."""
    config = json.loads((LAYOUT / f"{kind}.config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config.update(block_out_channels=list(widths), attention_head_dim=[w // 64 for w in widths])
    if kind == "unet":
        config.update(encoder_hid_dim=None, encoder_hid_dim_type=None)  # the Resampler is set below
    return config


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Deterministic weights with a healthy scale, as the test fixtures have (tests/support/tiny_models.py)."""
    from tiny_models import _randomize

    _randomize(module, torch.Generator(device="cpu").manual_seed(seed))


def reference_unets(widths: tuple[int, int, int], seed: int = 0):
    """(TryonNet, GarmentNet) as diffusers UNets with IDM's literal processors; fp32 on the CPU."""
    from diffusers import UNet2DConditionModel
    from reference_idm import ResamplerLiteral, install_ip_processors

    tryon = UNet2DConditionModel.from_config(unet_config("unet", widths))
    tryon.encoder_hid_proj = ResamplerLiteral(dim=1280, depth=4, num_queries=16, embedding_dim=1280, output_dim=2048, ff_mult=4)
    install_ip_processors(tryon)
    garment = UNet2DConditionModel.from_config(unet_config("unet_encoder", widths))
    randomize(tryon, seed + 1)
    randomize(garment, seed + 2)
    return tryon.eval(), garment.eval()


@dataclass
class BenchInputs:
    noise: torch.Tensor  # (1, 4, h, w)
    concat: torch.Tensor  # (1, 9, h, w): mask, masked-person latent, DensePose latent
    garment_latent: torch.Tensor  # (1, 4, h, w)
    text_cond: torch.Tensor  # (1, 77, 2048)
    text_uncond: torch.Tensor
    pooled_cond: torch.Tensor  # (1, 1280)
    pooled_uncond: torch.Tensor
    garment_context: torch.Tensor
    clip_cond: torch.Tensor  # (1, 257, 1280) penultimate CLIP states of the garment
    clip_uncond: torch.Tensor  # ... of zero pixel values

    @property
    def image_size(self) -> tuple[int, int]:
        return self.noise.shape[2] * 8, self.noise.shape[3] * 8


def make_inputs(latent: tuple[int, int], seed: int = 42) -> BenchInputs:
    generator = torch.Generator().manual_seed(seed)
    h, w = latent

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator) * scale

    mask = torch.zeros(1, 1, h, w)
    mask[..., h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
    concat = torch.cat([mask, randn(1, 4, h, w), randn(1, 4, h, w)], dim=1)
    return BenchInputs(
        randn(1, 4, h, w),
        concat,
        randn(1, 4, h, w),
        randn(1, TEXT_TOKENS, 2048),
        randn(1, TEXT_TOKENS, 2048),
        randn(1, 1280),
        randn(1, 1280),
        randn(1, TEXT_TOKENS, 2048),
        randn(1, CLIP_TOKENS, 1280),
        randn(1, CLIP_TOKENS, 1280),
    )
