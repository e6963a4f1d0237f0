"""The whole OOTDiffusion preparation behind its apply node: inputs, latents, conditioning tokens, the patched MODEL.

README.md, "OOTDiffusion". The original's inputs, exactly:
- the masked person (grey 127 inside the mask) and the person, VAE-encoded *unscaled* (the instruct-pix2pix
  convention): the masked-person latent is unet_vton's extra input (`concat_latent_image`), the person latent is what
  the sampler repaints outside the mask (the LATENT's samples outside the mask, with the mask as its `noise_mask`);
- the garment latent (unscaled) for the garment UNet, which runs once per sampling run at timestep 0 on it (cond) and
  on an all-zero latent (uncond); each transformer block's input is normalised by unet_vton's own norm1 and joins
  unet_vton's self-attention (the reference-attention core);
- the conditioning tokens, the same for both CFG halves (no text prompt): hd [BOS of "", garment image embedding],
  dc [BOS, category word, EOS of the category truncated to 3 tokens, garment image embedding].
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_base
import torch

from ..attention.garment_features import transformer_block_widths
from ..attention.reference_bank import ReferenceFeatureBank, install_reference_attention, reference_bank_of
from ..attention.reference_spec import CapturePoint, OncePerRun, ReferenceInputs, ReferenceSpec, UncondReference
from ..errors import TryOnInputError
from ..models.clip_vision_encode import clip_vision_outputs
from ..preprocess.labels import CATEGORIES, check_choice
from ..preprocess.ootd_inputs import prepare_ootd_pixels
from ..preprocess.tryon_inputs import latent_mask

WRAPPER_KEY = "ootdiffusion"
NODE_NAME = "OOTDiffusion Apply"
MODEL_TYPES = ("hd", "dc")  # hd: VITON-HD (half body, upper_body only); dc: DressCode (full body)
# The original's category words (run_ootd's category_dict); dc keeps the first token of each after truncation to 3 tokens
CATEGORY_WORDS = {"upper_body": "upperbody", "lower_body": "lowerbody", "dresses": "dress"}
GARMENT_TIMESTEP = 0.0  # the garment UNet runs once, at timestep 0


@dataclass(frozen=True)
class OOTDResult:
    model: object  # the patched unet_vton ModelPatcher
    positive: list
    negative: list
    latent: dict
    context: torch.Tensor  # (1 or B, 2 | 4, D): the conditioning tokens (garment UNet and unet_vton)
    garment_latent: torch.Tensor  # (1 or B, 4, h, w), unscaled
    bank: ReferenceFeatureBank  # the per-run garment features (mutable; shared by clones of `model`)


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------
def _unet(model):
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    return unet if unet is not None and hasattr(unet, "input_blocks") else None


def _in_channels(unet) -> int:
    return unet.input_blocks[0][0].in_channels


def check_models(vton_model, garment_model) -> None:
    """Clear errors when the two MODEL inputs are swapped or of the wrong kind (e.g. SDXL)."""
    vton, garment = _unet(vton_model), _unet(garment_model)
    if vton is None or not isinstance(vton_model.model, comfy.model_base.SD15_instructpix2pix):
        if vton is not None and _in_channels(vton) == 4 and getattr(vton, "label_emb", None) is None:
            raise TryOnInputError(
                "vton_model: this is a 4-channel UNet (OOTDiffusion's unet_garm?). The two MODEL inputs look swapped: "
                "unet_vton (8 input channels) goes here, unet_garm into garment_model."
            )
        raise TryOnInputError(
            "vton_model: this MODEL is not OOTDiffusion's unet_vton (an 8-channel SD1.5 UNet). Load "
            "checkpoints/ootd/ootd_hd (or ootd_dc)/checkpoint-36000/unet_vton with 'OOTDiffusion UNet Loader'."
        )
    if garment is None:
        raise TryOnInputError("garment_model: expected OOTDiffusion's unet_garm MODEL (from 'OOTDiffusion UNet Loader' or the stock UNETLoader).")
    if getattr(garment, "label_emb", None) is not None:
        raise TryOnInputError("garment_model: this is an SDXL-style UNet; OOTDiffusion's garment UNet is its SD1.5 unet_garm.")
    if _in_channels(garment) != 4:
        raise TryOnInputError(
            f"garment_model: this UNet has {_in_channels(garment)} input channels (unet_vton?); the garment UNet is the "
            "4-channel unet_garm. Check that the two MODEL inputs are not swapped."
        )
    vton_context, garment_context = (model.model.model_config.unet_config.get("context_dim") for model in (vton_model, garment_model))
    if garment_context != vton_context:
        raise TryOnInputError(
            f"garment_model: its cross-attention takes {garment_context}-wide text tokens, unet_vton's {vton_context} "
            "(another SD version?). Use unet_garm from the same OOTDiffusion checkpoint folder (ootd_hd or ootd_dc) as unet_vton."
        )
    vton_widths, garment_widths = transformer_block_widths(vton), transformer_block_widths(garment)
    if garment_widths != vton_widths:
        raise TryOnInputError(
            "garment_model: its transformer blocks differ from unet_vton's. Use unet_garm from the same OOTDiffusion "
            "checkpoint folder (ootd_hd or ootd_dc) as unet_vton."
        )


def check_options(model_type: str, category: str) -> None:
    check_choice(model_type, MODEL_TYPES, "model_type")
    check_choice(category, CATEGORIES, "category")
    if model_type == "hd" and category != "upper_body":
        raise TryOnInputError(
            f"category: the hd model (ootd_hd, trained on VITON-HD) dresses upper_body only, not {category}. Use upper_body, "
            "or the dc model (ootd_dc) with model_type dc for lower_body and dresses."
        )


def context_width(vton_model) -> int:
    """The width unet_vton's cross-attention expects (768 for SD1.5)."""
    return vton_model.model.model_config.unet_config["context_dim"]


# ----------------------------------------------------------------------------------------------
# Conditioning tokens
# ----------------------------------------------------------------------------------------------
def text_tokens(clip, model_type: str, category: str) -> torch.Tensor:
    """(1, T, D) text hidden states: hd [BOS] of "", dc [BOS, word, EOS] of the category truncated to 3 tokens.

    The text encoder is causal, so positions 0-2 of a longer encoding equal the original's 3-token encoding. The
    truncation keeps the first BPE piece of the word: 'upperbody' -> 'upper' (not the token of the word "upper").
    Always the last layer's states after the final LayerNorm (the original's), whatever CLIPSetLastLayer said.
    """
    if clip is None or not hasattr(clip, "tokenize"):
        raise TryOnInputError("clip: connect SD1.5's text encoder (the CLIP output of an SD1.5 checkpoint, or OOTDiffusion's text_encoder/).")
    clip = clip.clone()
    clip.clip_layer(None)
    empty = clip.tokenize("")
    if set(empty) != {"l"}:
        raise TryOnInputError(
            f"clip: this text encoder has the parts {sorted(empty)}; OOTDiffusion uses SD1.5's (CLIP-L only). Connect an SD1.5 checkpoint's CLIP."
        )
    row = empty["l"][0]
    if model_type == "hd":
        tokens, keep = empty, 1
    else:
        words = clip.tokenize(CATEGORY_WORDS[category])["l"][0]
        end, pad = row[1], row[-1]
        tokens, keep = {"l": [[words[0], words[1], end] + [pad] * (len(words) - 3)]}, 3
    return clip.encode_from_tokens(tokens)[:, :keep].float()


def image_embeds(clip_vision, garment: torch.Tensor) -> torch.Tensor:
    """(B, D) projected CLIP image embeddings of the garment, with the original's (PIL) CLIP preprocessing."""
    if clip_vision is None or not hasattr(clip_vision, "encode_image"):
        raise TryOnInputError("clip_vision: load CLIP ViT-L/14 (clip-vit-large-patch14) with the CLIPVisionLoader node.")
    return clip_vision_outputs(clip_vision, garment, "original")["image_embeds"].float()


def conditioning_context(clip, clip_vision, garment: torch.Tensor, model_type: str, category: str, width: int) -> torch.Tensor:
    """(1 or B, 2 | 4, width): text tokens followed by the garment's image embedding."""
    image = image_embeds(clip_vision, garment)
    if image.shape[-1] != width:
        raise TryOnInputError(
            f"clip_vision: this vision model gives {image.shape[-1]}-wide image embeddings; OOTDiffusion needs {width} "
            "(CLIP ViT-L/14, clip-vit-large-patch14). Pick that file in CLIPVisionLoader."
        )
    text = text_tokens(clip, model_type, category)
    if text.shape[-1] != width:
        raise TryOnInputError(f"clip: this text encoder gives {text.shape[-1]}-wide states; OOTDiffusion needs {width} (SD1.5's CLIP-L).")
    return torch.cat([text.to(image).expand(image.shape[0], -1, -1), image.unsqueeze(1)], dim=1)


# ----------------------------------------------------------------------------------------------
# The apply node's work
# ----------------------------------------------------------------------------------------------
def reference_spec(vton_model) -> ReferenceSpec:
    """OOTDiffusion on the reference-attention core: every block, raw block inputs, zero-latent uncond, once at t=0."""
    blocks = tuple(transformer_block_widths(vton_model.model.diffusion_model))
    return ReferenceSpec(blocks, CapturePoint.BLOCK_INPUT, UncondReference.FEATURES_OF_ZERO_LATENT, OncePerRun(timestep=GARMENT_TIMESTEP))


def patch_vton_model(vton_model, garment_model, garment_latent: torch.Tensor, context: torch.Tensor):
    """A clone of unet_vton with the garment UNet's features in every self-attention; returns (model, bank)."""
    model = vton_model.clone()
    inputs = ReferenceInputs(garment_model, garment_latent, context)
    bank = install_reference_attention(model, reference_spec(vton_model), inputs, wrapper_key=WRAPPER_KEY, node_name=NODE_NAME)
    return model, bank


def ootd_bank(model) -> ReferenceFeatureBank | None:
    """The garment feature bank of a MODEL patched by the apply node (or of a clone of it)."""
    return reference_bank_of(model, WRAPPER_KEY)


def apply_ootd(vton_model, garment_model, vae, clip, clip_vision, person, mask, garment, model_type: str = "hd", category: str = "upper_body") -> OOTDResult:
    """Everything the apply node outputs; the checks run before the VAE (a wrong model fails fast)."""
    check_options(model_type, category)
    check_models(vton_model, garment_model)
    if vae is None or not hasattr(vae, "encode"):
        raise TryOnInputError("vae: connect SD1.5's VAE (an SD1.5 checkpoint's VAE, or OOTDiffusion's vae/).")
    pixels = prepare_ootd_pixels(person, mask, garment)
    context = conditioning_context(clip, clip_vision, pixels.garment, model_type, category, context_width(vton_model))
    masked_latent = vae.encode(pixels.masked_person)  # unscaled, as the original (no latent scale factor)
    person_latent = vae.encode(pixels.person)
    garment_latent = vae.encode(pixels.garment)
    mask_latent = latent_mask(pixels.mask).to(person_latent)
    model, bank = patch_vton_model(vton_model, garment_model, garment_latent, context)
    positive = [[context, {"concat_latent_image": masked_latent}]]
    negative = [[context.clone(), {"concat_latent_image": masked_latent}]]
    # the person latent outside the mask (what the repaint restores), nothing of it inside (the original starts from noise)
    latent = {"samples": person_latent * (1 - mask_latent), "noise_mask": mask_latent}
    return OOTDResult(model, positive, negative, latent, context, garment_latent, bank)
