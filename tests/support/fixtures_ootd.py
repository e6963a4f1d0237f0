"""Tiny random OOTDiffusion fixtures with the official key names, folder layout and file formats.

- The two UNets of each model (hd, dc) in levihsu/OOTDiffusion's layout, `ootd/ootd_hd|ootd_dc/checkpoint-36000/
  unet_vton|unet_garm/{config.json, diffusion_pytorch_model.safetensors}`: diffusers UNet2DConditionModel names of the
  SD1.5 architecture (4 levels, 2 resnets each, attention on the first three, 8 heads, conv projections), at tiny
  widths; unet_vton has 8 input channels, unet_garm 4. Widths keep SD1.5's pattern (the last two levels equal), so
  the key set is exactly the real one (`real_unet_keys` checks it).
- A tiny SD1.5 checkpoint (single-file format: its UNet is unet_garm, a tiny CLIP-L-shaped text encoder with the real
  vocabulary, a full-size random VAE) for ComfyUI's stock CheckpointLoaderSimple, once `register_tiny_models` taught
  ComfyUI the tiny sizes (test-only).
- The CLIP vision model is the tiny ViT-L/14-shaped one (tiny_models.build_image_encoder_l: quick_gelu, 224 px, patch
  14), with a projection of TEXT_WIDTH, the width the tiny UNets' cross-attention expects (as ViT-L/14's 768 for SD1.5).
Generated in seconds; nothing is committed.
"""

from __future__ import annotations

import json
import pathlib

import safetensors.torch
import torch
from tiny_models import POOLED_DIM, _randomize

UNET_WIDTHS = (32, 64, 128, 128)  # SD1.5: 320, 640, 1280, 1280
TEXT_WIDTH = POOLED_DIM  # the cross-attention width; = the tiny CLIP vision's projection (SD1.5: 768 = ViT-L/14's)
TEXT_LAYERS = 3
HEADS = 8  # SD1.5's config says attention_head_dim 8, which diffusers reads as 8 heads
CHECKPOINT_STEP = "checkpoint-36000"
KINDS = ("hd", "dc")
VAE_SCALING = 0.18215
SD15_CHECKPOINT = "tiny_sd15.safetensors"
VISION_FILE = "tiny_clip_vision_l.safetensors"  # ViT-L/14-shaped (tiny_models.build_image_encoder_l)
SEEDS = {("hd", "vton"): 41, ("hd", "garm"): 42, ("dc", "vton"): 43, ("dc", "garm"): 44}


def unet_kwargs(in_channels: int, widths: tuple[int, ...] = UNET_WIDTHS, cross_attention_dim: int = TEXT_WIDTH) -> dict:
    """diffusers UNet2DConditionModel arguments of OOTDiffusion's SD1.5 UNets (the official config), at `widths`."""
    return dict(
        sample_size=64,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=widths,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=HEADS,
        use_linear_projection=False,
        norm_num_groups=32,
        norm_eps=1e-5,
    )


def build_unet(in_channels: int, seed: int):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**unet_kwargs(in_channels))
    _randomize(unet, torch.Generator().manual_seed(seed))
    return unet.eval()


def real_unet_keys(in_channels: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the real OOTDiffusion UNet (SD1.5 at full width), built on the meta device (no memory)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_kwargs(in_channels, (320, 640, 1280, 1280), 768))
    return {k: tuple(v.shape) for k, v in unet.state_dict().items()}


def unet_folder(base: pathlib.Path, kind: str, part: str) -> pathlib.Path:
    """base/ootd/ootd_<kind>/checkpoint-36000/unet_<part>, as under the Hugging Face repo's checkpoints/."""
    return base / "ootd" / f"ootd_{kind}" / CHECKPOINT_STEP / f"unet_{part}"


def write_unets(base: pathlib.Path, kinds: tuple[str, ...] = KINDS) -> None:
    """Writes both UNets of each kind under `base` (existing files are kept)."""
    for kind in kinds:
        for part, channels in (("vton", 8), ("garm", 4)):
            folder = unet_folder(base, kind, part)
            weights = folder / "diffusion_pytorch_model.safetensors"
            if weights.exists():
                continue
            unet = build_unet(channels, SEEDS[(kind, part)])
            folder.mkdir(parents=True, exist_ok=True)
            unet.save_config(folder)
            safetensors.torch.save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(weights))


def load_unet(base: pathlib.Path, kind: str, part: str):
    """The diffusers UNet stored under `base` (the reference's copy of the weights)."""
    from diffusers import UNet2DConditionModel

    folder = unet_folder(base, kind, part)
    config = json.loads((folder / "config.json").read_text())
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(safetensors.torch.load_file(str(folder / "diffusion_pytorch_model.safetensors")))
    return unet.eval()


def text_config() -> dict:
    """A CLIP-L-shaped text model (SD1.5's text encoder) at tiny width, with the real vocabulary and special tokens."""
    return {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 49406,
        "dropout": 0.0,
        "eos_token_id": 49407,
        "hidden_act": "quick_gelu",
        "hidden_size": TEXT_WIDTH,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": TEXT_WIDTH * 4,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 2,
        "num_hidden_layers": TEXT_LAYERS,
        "pad_token_id": 1,
        "projection_dim": TEXT_WIDTH,
        "torch_dtype": "float32",
        "vocab_size": 49408,
    }


def load_text_encoder(checkpoint: pathlib.Path):
    """transformers' CLIPTextModel with the text encoder weights of the tiny SD1.5 checkpoint (the reference's copy)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    stored = safetensors.torch.load_file(str(checkpoint))
    model = CLIPTextModel(CLIPTextConfig(**text_config()))
    # transformers 4 names the weights text_model.*, transformers 5 drops that level
    prefix = "cond_stage_model.transformer." + ("" if any(k.startswith("text_model.") for k in model.state_dict()) else "text_model.")
    weights = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise RuntimeError(f"text encoder keys differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Test-only registration: the tiny SD1.5 sizes for ComfyUI's stock loaders
# ----------------------------------------------------------------------------------------------
_REGISTERED = False


def tiny_sd15_unet_config(in_channels: int) -> dict:
    """The subset ComfyUI matches a single-file SD1.5 UNet against, at the tiny widths."""
    return {
        "context_dim": TEXT_WIDTH,
        "model_channels": UNET_WIDTHS[0],
        "use_linear_in_transformer": False,
        "adm_in_channels": None,
        "use_temporal_attention": False,
        "in_channels": in_channels,
    }


def register_tiny_models() -> None:
    """Lets ComfyUI's stock loaders accept the tiny SD1.5 checkpoint (CLIP text + VAE + UNet) and tiny SD1.5 UNet files."""
    global _REGISTERED
    if _REGISTERED:
        return
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.supported_models_base

    class TinySD1CheckpointClipModel(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, return_projected_pooled=False, dtype=dtype, model_options=model_options, textmodel_json_config=text_config())

    class TinySD1ClipModel(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options, clip_model=TinySD1CheckpointClipModel, **kwargs)

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinySD1ClipModel)

    tiny = [
        type("TinySD15_instructpix2pix", (comfy.supported_models.SD15_instructpix2pix,), {"unet_config": tiny_sd15_unet_config(8), "clip_target": clip_target}),
        type("TinySD15", (comfy.supported_models.SD15,), {"unet_config": tiny_sd15_unet_config(4), "clip_target": clip_target}),
    ]
    comfy.supported_models.models[:0] = tiny
    _REGISTERED = True


def write_sd15_checkpoint(path: pathlib.Path, garment_unet_folder: pathlib.Path) -> None:
    """A tiny SD1.5 checkpoint in the single-file format (model.diffusion_model / cond_stage_model / first_stage_model)."""
    import comfy.supported_models
    from comfy_host import write_single_file_checkpoint

    register_tiny_models()
    diffusers_sd = safetensors.torch.load_file(str(garment_unet_folder / "diffusion_pytorch_model.safetensors"))
    model_config = next(m for m in comfy.supported_models.models if m.__name__ == "TinySD15")(tiny_sd15_unet_config(4))
    write_single_file_checkpoint(path, model_config, _sd15_unet_config(diffusers_sd), diffusers_sd, clip_seed=45, vae_sample_size=512, vae_scaling=VAE_SCALING)


def _sd15_unet_config(diffusers_sd: dict) -> dict:
    """ComfyUI's UNet config of a diffusers SD1.5 UNet of any width (ComfyUI's own detection knows only the real sizes)."""
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": diffusers_sd["conv_in.weight"].shape[1],
        "model_channels": UNET_WIDTHS[0],
        "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [w // UNET_WIDTHS[0] for w in UNET_WIDTHS],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
        "context_dim": TEXT_WIDTH,
        "num_heads": HEADS,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }


# ----------------------------------------------------------------------------------------------
# The models tree
# ----------------------------------------------------------------------------------------------
# The names the OOTDiffusion workflows use (the real files) -> the tiny fixtures standing in for them (under models/).
REAL_NAME_ALIASES = {
    "checkpoints/v1-5-pruned-emaonly.safetensors": f"checkpoints/{SD15_CHECKPOINT}",
    "clip_vision/clip-vit-large-patch14.safetensors": "clip_vision/" + VISION_FILE,
}


def write(models: pathlib.Path) -> None:
    """Writes the OOTDiffusion fixtures under `models/`: both UNets of hd and dc in diffusion_models/ (official layout),
    the tiny SD1.5 checkpoint in checkpoints/, the tiny ViT-L-shaped CLIP vision in clip_vision/, and the real-name
    aliases. Existing files are kept."""
    import shutil

    from tiny_models import build_image_encoder_l

    write_unets(models / "diffusion_models")
    checkpoint = models / "checkpoints" / SD15_CHECKPOINT
    if not checkpoint.exists():
        write_sd15_checkpoint(checkpoint, unet_folder(models / "diffusion_models", "hd", "garm"))
    vision = models / "clip_vision" / VISION_FILE
    if not vision.exists():
        vision.parent.mkdir(parents=True, exist_ok=True)
        staging = models.parent / "ootd_image_encoder"
        build_image_encoder_l().save_pretrained(staging)
        shutil.copy(staging / "model.safetensors", vision)
    from comfy_host import add_real_name_aliases

    add_real_name_aliases(models, REAL_NAME_ALIASES)


def unet_name(kind: str, part: str) -> str:
    """The UNet's name in ComfyUI's diffusion_models list."""
    return f"ootd/ootd_{kind}/{CHECKPOINT_STEP}/unet_{part}/diffusion_pytorch_model.safetensors"
