"""Deterministic tiny random models with the exact key, folder and file layout of the real checkpoints.

- IDM-VTON Hugging Face layout: unet/ (.bin pickle, 13 channels, Resampler + IP weights, config with EMA
  fields), unet_encoder/ (safetensors with the 4 stray add_embedding keys), image_encoder/ (CLIP vision).
- A tiny SDXL checkpoint (UNet = the unet_encoder weights + its add embedding, both text encoders, VAE)
  in the SDXL checkpoint key format, for ComfyUI's stock CheckpointLoaderSimple.
- A tiny CLIP vision file for ComfyUI's stock CLIPVisionLoader.
Two presets: "layout" keeps the real depths (70 transformer blocks); "fast" is shallow.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import safetensors.torch
import torch

LAYOUTS = pathlib.Path(__file__).resolve().parents[2] / "models" / "layouts"  # the real checkpoints' key lists and configs
REFERENCE_LAYOUT = LAYOUTS / "idm_vton_hf_layout"

# Tiny text encoders: CLIP-L 32 wide + bigG 32 wide -> context 64; pooled 32 -> adm 32 + 6 * 256.
CLIP_L_WIDTH, CLIP_G_WIDTH, POOLED_DIM = 32, 32, 32
CONTEXT_DIM = CLIP_L_WIDTH + CLIP_G_WIDTH
ADM_DIM = POOLED_DIM + 6 * 256
VISION_WIDTH, VISION_LAYERS = 64, 3
VISION_L_LAYERS = VISION_LAYERS + 1  # the ViT-L/14-shaped stand-in (quick_gelu, OOTDiffusion's), told apart by its depth
VAE_SCALING = 0.13025


@dataclass(frozen=True)
class Preset:
    name: str
    layers_per_block: int
    transformer_layers_per_block: tuple[int, int, int]
    block_out_channels: tuple[int, int, int] = (32, 64, 128)

    @property
    def attention_heads(self) -> list[int]:
        return [max(c // 64, 1) for c in self.block_out_channels]

    def comfy_unet_config(self) -> dict:
        """The subset ComfyUI matches a checkpoint's UNet against (for the test-only model registration)."""
        depth = []
        for level, layers in enumerate(self.transformer_layers_per_block):
            depth += [0 if level == 0 else layers] * self.layers_per_block
        return {
            "model_channels": self.block_out_channels[0],
            "use_linear_in_transformer": True,
            "transformer_depth": depth,
            "context_dim": CONTEXT_DIM,
            "adm_in_channels": ADM_DIM,
            "use_temporal_attention": False,
        }


PRESETS = {
    "layout": Preset("layout", 2, (1, 2, 10)),
    "fast": Preset("fast", 1, (1, 1, 1)),
}


def _unet_kwargs(preset: Preset, in_channels: int) -> dict:
    return dict(
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=preset.layers_per_block,
        block_out_channels=preset.block_out_channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=preset.transformer_layers_per_block,
        attention_head_dim=preset.attention_heads,
        cross_attention_dim=CONTEXT_DIM,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=ADM_DIM,
        norm_num_groups=32,
    )


def _randomize(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Deterministic weights with a healthy scale everywhere (no zero-initialised layers)."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim == 0:
                continue
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            elif param.ndim == 1:  # norm weights
                param.copy_(1 + torch.randn(param.shape, generator=generator) * 0.05)
            else:
                fan_in = param[0].numel() if param.ndim > 1 else param.shape[-1]
                param.copy_(torch.randn(param.shape, generator=generator) / max(fan_in, 1) ** 0.5)


def build_garment_unet(preset: Preset, seed: int = 1, add_embedding: bool = True):
    """GarmentNet = an SDXL-base UNet (with the add embedding a base checkpoint has, unless told otherwise)."""
    from diffusers import UNet2DConditionModel

    kwargs = _unet_kwargs(preset, 4)
    if not add_embedding:
        kwargs.update(addition_embed_type=None, projection_class_embeddings_input_dim=None)
    unet = UNet2DConditionModel(**kwargs)
    _randomize(unet, torch.Generator().manual_seed(seed))
    return unet.eval()


def build_tryon_unet(preset: Preset, seed: int = 2):
    """TryonNet: 13 channels, IDM's Resampler as encoder_hid_proj, IP processors on every attn2."""
    from diffusers import UNet2DConditionModel
    from reference_idm import ResamplerLiteral, install_ip_processors

    unet = UNet2DConditionModel(**_unet_kwargs(preset, 13), encoder_hid_dim=VISION_WIDTH, encoder_hid_dim_type="image_proj")  # slot only; replaced below
    unet.encoder_hid_proj = ResamplerLiteral(dim=VISION_WIDTH, depth=4, num_queries=16, embedding_dim=VISION_WIDTH, output_dim=CONTEXT_DIM, ff_mult=4)
    install_ip_processors(unet)
    _randomize(unet, torch.Generator().manual_seed(seed))
    return unet.eval()


def build_image_encoder(seed: int = 3, hidden_act: str = "gelu", layers: int = VISION_LAYERS):
    """The tiny CLIP vision encoder: ViT-H/14-shaped by default (gelu, IDM-VTON's); see build_image_encoder_l."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=VISION_WIDTH,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=224,
        patch_size=14,
        projection_dim=32,
        hidden_act=hidden_act,
    )
    model = CLIPVisionModelWithProjection(config)
    _randomize(model, torch.Generator().manual_seed(seed))
    return model.eval()


def _config_with(reference: str, preset: Preset, **overrides) -> dict:
    config = json.loads((REFERENCE_LAYOUT / reference).read_text())
    config.update(
        block_out_channels=list(preset.block_out_channels),
        layers_per_block=preset.layers_per_block,
        transformer_layers_per_block=list(preset.transformer_layers_per_block),
        attention_head_dim=preset.attention_heads,
        cross_attention_dim=CONTEXT_DIM,
        sample_size=32,
        **overrides,
    )
    return config


def write_idm_layout(root: pathlib.Path, preset: Preset) -> pathlib.Path:
    """IDM-VTON's Hugging Face folder layout with tiny random weights; returns the repo folder."""
    repo = root / f"IDM-VTON-tiny-{preset.name}"
    if (repo / "unet" / "diffusion_pytorch_model.bin").exists():
        return repo
    garment, tryon, encoder = build_garment_unet(preset), build_tryon_unet(preset), build_image_encoder()
    (repo / "unet").mkdir(parents=True, exist_ok=True)
    (repo / "unet_encoder").mkdir(parents=True, exist_ok=True)
    (repo / "unet" / "config.json").write_text(
        json.dumps(_config_with("unet.config.json", preset, encoder_hid_dim=VISION_WIDTH, projection_class_embeddings_input_dim=ADM_DIM), indent=2)
    )
    torch.save(dict(tryon.state_dict()), repo / "unet" / "diffusion_pytorch_model.bin")
    (repo / "unet_encoder" / "config.json").write_text(json.dumps(_config_with("unet_encoder.config.json", preset), indent=2))
    garment_sd = {k: v.contiguous() for k, v in garment.state_dict().items()}
    safetensors.torch.save_file(garment_sd, repo / "unet_encoder" / "diffusion_pytorch_model.safetensors")
    encoder.save_pretrained(repo / "image_encoder")
    return repo


def load_reference_unets(repo: pathlib.Path, preset: Preset):
    """The diffusers reference models with the weights stored in an IDM layout folder."""
    tryon = build_tryon_unet(preset, seed=99)
    tryon.load_state_dict(torch.load(repo / "unet" / "diffusion_pytorch_model.bin", weights_only=True))
    garment = build_garment_unet(preset, seed=98, add_embedding=False)  # as IDM's unet_encoder config: no add embedding
    stored = safetensors.torch.load_file(repo / "unet_encoder" / "diffusion_pytorch_model.safetensors")
    garment.load_state_dict({k: v for k, v in stored.items() if not k.startswith("add_embedding.")})
    return tryon.eval(), garment.eval()


def build_image_encoder_l(seed: int = 4):
    """The tiny CLIP ViT-L/14-shaped encoder (OOTDiffusion's): quick_gelu as ViT-L/14, 224 px, patch 14, projection to
    the tiny SD1.5's text width (as ViT-L/14's 768 for SD1.5)."""
    return build_image_encoder(seed, "quick_gelu", VISION_L_LAYERS)


def tiny_clip_vision_json(path: pathlib.Path, hidden_act: str = "gelu", layers: int = VISION_LAYERS) -> pathlib.Path:
    """ComfyUI ClipVisionModel config matching build_image_encoder(hidden_act=, layers=)."""
    path.write_text(
        json.dumps(
            {
                "attention_dropout": 0.0,
                "dropout": 0.0,
                "hidden_act": hidden_act,
                "hidden_size": VISION_WIDTH,
                "image_size": 224,
                "initializer_factor": 1.0,
                "initializer_range": 0.02,
                "intermediate_size": 128,
                "layer_norm_eps": 1e-5,
                "model_type": "clip_vision_model",
                "num_attention_heads": 2,
                "num_channels": 3,
                "num_hidden_layers": layers,
                "patch_size": 14,
                "projection_dim": 32,
                "torch_dtype": "float32",
            }
        )
    )
    return path


def tiny_text_config(width: int, layers: int = 3) -> dict:
    return {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 49407,
        "hidden_act": "gelu",
        "hidden_size": width,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": width * 2,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 2,
        "num_hidden_layers": layers,
        "pad_token_id": 1,
        "projection_dim": POOLED_DIM,
        "torch_dtype": "float32",
        "vocab_size": 49408,
    }
