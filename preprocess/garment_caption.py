"""Zero-shot garment captioning with a transformers CLIP or SigLIP model over the tag taxonomy, and the IDM-VTON prompts.

Per attribute (sleeve length, neckline, item, ...) each tag's text feature is the mean of its L2-normalised
template embeddings (renormalised). The image feature is compared with them by cosine similarity times the
model's `logit_scale.exp()` (plus `logit_bias` for SigLIP). Probabilities:
- CLIP was trained with a softmax over the batch's texts, so its scores are a **softmax over the attribute's tags**
  (they sum to 1 per attribute);
- SigLIP was trained with a per-pair sigmoid, so its scores are **independent sigmoids** (they need not sum to 1).
The chosen tag is the highest score either way (ties go to the tag listed first). Everything runs in eval mode
without sampling, so the same image gives the same caption.

The model is wrapped in a ComfyUI `ModelPatcher` and loaded with `load_models_gpu` before every use, so ComfyUI's
memory management (other models' loads, `--lowvram`, "free memory") can move it off the GPU like any model.
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import TryOnInputError
from .garment_taxonomy import Attribute, Tag

TRYON_PREFIX = "model is wearing "
GARMENT_PREFIX = "a photo of "
SUPPORTED_MODEL_TYPES = ("clip", "siglip")
TEXT_BATCH = 64
_MODEL_CACHE_SIZE = 2


# ----------------------------------------------------------------------------------------------
# Descriptions and prompts (plain text)
# ----------------------------------------------------------------------------------------------
def clean_description(text: str) -> str:
    """A description with surrounding and repeated whitespace removed; the casing is kept as typed."""
    return " ".join(str(text).split())


def compose_description(captions: list[str]) -> str:
    """The description from the chosen tags' captions in attribute order (empty captions add nothing)."""
    return clean_description(" ".join(caption for caption in captions if caption))


def compose_prompts(description: str) -> tuple[str, str]:
    """(TryonNet prompt, GarmentNet prompt) as IDM-VTON builds them: "model is wearing <desc>", "a photo of <desc>"."""
    return TRYON_PREFIX + description, GARMENT_PREFIX + description


# ----------------------------------------------------------------------------------------------
# Scores (plain tensors)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttributeScores:
    attribute: Attribute
    probabilities: tuple[float, ...]  # one per tag, in the taxonomy's order

    def ranked(self) -> list[tuple[Tag, float]]:
        """Tags by decreasing probability; ties keep the taxonomy's order."""
        order = sorted(range(len(self.probabilities)), key=lambda i: (-self.probabilities[i], i))
        return [(self.attribute.tags[i], self.probabilities[i]) for i in order]

    @property
    def best(self) -> Tag:
        return self.ranked()[0][0]


def normalized(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def tag_features(template_features: torch.Tensor) -> torch.Tensor:
    """(tags, templates, D) normalised template embeddings -> (tags, D) normalised per-tag features (prompt ensembling)."""
    return normalized(normalized(template_features).mean(dim=1))


def zero_shot_probabilities(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor | None, kind: str
) -> torch.Tensor:
    """(D,) image and (T, D) tag features -> (T,) probabilities: softmax for CLIP, sigmoid for SigLIP."""
    logits = logit_scale.exp() * (normalized(text_features.float()) @ normalized(image_features.float()))
    if kind == "siglip":
        return torch.sigmoid(logits + (logit_bias if logit_bias is not None else 0.0))
    return torch.softmax(logits, dim=0)


def describe(scores: list[AttributeScores]) -> str:
    """The description made of each attribute's best tag."""
    return compose_description([score.best.caption for score in scores])


def format_scores(scores: list[AttributeScores], header: str = "", top: int = 3) -> str:
    """Readable top-`top` tags per attribute, e.g. "sleeve length: Short Sleeve 0.612, Long Sleeve 0.201, ..."."""
    lines = [header] if header else []
    for score in scores:
        ranked = ", ".join(f"{tag.name} {p:.3f}" for tag, p in score.ranked()[:top])
        lines.append(f"{score.attribute.label}: {ranked}")
    return "\n".join(lines)


def image_to_pil(image: torch.Tensor) -> Image.Image:
    """One (H, W, 3) ComfyUI image in [0, 1] -> an 8-bit RGB PIL image (rounded, as LoadImage's inverse)."""
    array = (image.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------
class CaptionNetwork(torch.nn.Module):
    """Holds the transformers model for ModelPatcher, which sets attributes (e.g. `device`) that transformers models refuse."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network


class CaptionModel:
    """A CLIP/SigLIP model and its processor under ComfyUI's memory management, with per-attribute text features cached."""

    def __init__(self, model: torch.nn.Module, processor, kind: str, name: str):
        import comfy.model_management
        import comfy.model_patcher

        self.kind = kind
        self.name = name
        self.processor = processor
        load_device = comfy.model_management.get_torch_device()
        dtype = torch.float16 if comfy.model_management.should_use_fp16(load_device, prioritize_performance=False) else torch.float32
        model = model.eval().requires_grad_(False).to(dtype)
        self.dtype = dtype
        self.patcher = comfy.model_patcher.ModelPatcher(
            CaptionNetwork(model), load_device=load_device, offload_device=comfy.model_management.unet_offload_device()
        )
        text_config = model.config.text_config
        self.max_text_length = int(getattr(text_config, "max_position_embeddings", 77))
        self._text_features: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model.network

    def _load(self) -> torch.device:
        import comfy.model_management

        comfy.model_management.load_models_gpu([self.patcher], force_full_load=True)
        device = self.patcher.load_device
        network = self.patcher.model
        if any(t.device != torch.device(device) for t in (*network.parameters(), *network.buffers())):
            # --novram loads partially, which leaves non-leaf parameters and buffers behind; the caption model is
            # small, so it runs whole on the device (ComfyUI's unload moves the whole module back)
            network.to(device)
        return device

    @staticmethod
    def _features(output) -> torch.Tensor:
        """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """(N, D) normalised text features on the CPU, float32."""
        device = self._load()
        padding = "max_length" if self.kind == "siglip" else True
        chunks = []
        for start in range(0, len(texts), TEXT_BATCH):
            tokens = self.processor.tokenizer(
                texts[start : start + TEXT_BATCH], padding=padding, truncation=True, max_length=self.max_text_length, return_tensors="pt"
            )
            tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            if self.kind == "siglip":
                tokens.pop("attention_mask", None)  # SigLIP was trained without an attention mask (fixed-length padding)
            chunks.append(normalized(self._features(self.model.get_text_features(**tokens)).float()).cpu())
        return torch.cat(chunks)

    def attribute_features(self, attribute: Attribute) -> torch.Tensor:
        """(tags, D) features of an attribute's tags (cached per prompt set)."""
        prompts = attribute.prompts()
        key = tuple(text for tag_prompts in prompts for text in tag_prompts)
        if key not in self._text_features:
            flat = self.encode_texts(list(key))
            self._text_features[key] = tag_features(flat.reshape(len(prompts), len(attribute.templates), -1))
        return self._text_features[key]

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(D,) normalised image feature of one (H, W, 3) ComfyUI image, through the model's own image processor."""
        device = self._load()
        pixels = self.processor.image_processor(images=[image_to_pil(image)], return_tensors="pt")["pixel_values"]
        features = self._features(self.model.get_image_features(pixel_values=pixels.to(device, self.dtype)))
        return normalized(features.float())[0].cpu()

    def score(self, image: torch.Tensor, attributes: tuple[Attribute, ...]) -> list[AttributeScores]:
        """Zero-shot probabilities of every tag of every attribute for one (H, W, 3) image."""
        image_features = self.encode_image(image)
        logit_scale = self.model.logit_scale.detach().float().cpu()
        bias = getattr(self.model, "logit_bias", None)
        logit_bias = bias.detach().float().cpu() if bias is not None else None
        results = []
        for attribute in attributes:
            probabilities = zero_shot_probabilities(image_features, self.attribute_features(attribute), logit_scale, logit_bias, self.kind)
            results.append(AttributeScores(attribute, tuple(float(p) for p in probabilities.reshape(-1))))
        return results


_models: collections.OrderedDict[tuple, CaptionModel] = collections.OrderedDict()


def read_model_type(folder: str, name: str, input_name: str = "caption_model") -> str:
    """'clip' or 'siglip' from the folder's config.json; a clear error for anything else."""
    config_path = os.path.join(folder, "config.json")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TryOnInputError(
            f"{input_name}: '{name}' has no readable config.json ({error}). Put a complete Hugging Face CLIP or SigLIP model folder in models/garment_caption."
        ) from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise TryOnInputError(
            f"{input_name}: '{name}' is not a CLIP or SigLIP model (config.json model_type is {model_type!r}; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}). Choose a folder such as openai/clip-vit-large-patch14 "
            "or google/siglip-so400m-patch14-384 saved in the Hugging Face layout."
        )
    return model_type


def load_caption_model(folder: str, name: str, input_name: str = "caption_model") -> CaptionModel:
    """The CLIP/SigLIP model in `folder` (offline, local files only), cached until its config.json changes."""
    folder = os.path.realpath(folder)
    kind = read_model_type(folder, name, input_name)
    key = (folder, os.stat(os.path.join(folder, "config.json")).st_mtime_ns)
    if key in _models:
        _models.move_to_end(key)
        return _models[key]
    from transformers import AutoProcessor, CLIPModel, SiglipModel

    model_class = CLIPModel if kind == "clip" else SiglipModel
    try:
        model = model_class.from_pretrained(folder, local_files_only=True)
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # transformers raises OSError/ValueError/KeyError/RuntimeError for broken folders
        raise TryOnInputError(
            f"{input_name}: cannot load '{name}' as a {kind} model: {type(error).__name__}: {error}. "
            "The folder needs the weights (model.safetensors), preprocessor_config.json and the tokenizer files."
        ) from error
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise TryOnInputError(f"{input_name}: '{name}' lacks an image processor or tokenizer (preprocessor_config.json, tokenizer files).")
    caption_model = CaptionModel(model, processor, kind, name)
    _models[key] = caption_model
    while len(_models) > _MODEL_CACHE_SIZE:
        _models.popitem(last=False)
    return caption_model


@dataclass(frozen=True)
class Caption:
    description: str
    tryon_prompt: str
    garment_prompt: str
    scores: str


def caption_from_description(description: str, note: str) -> Caption:
    """The prompts from a given description."""
    tryon_prompt, garment_prompt = compose_prompts(description)
    return Caption(description, tryon_prompt, garment_prompt, note)


def caption_garment(model: CaptionModel, images: torch.Tensor, attributes: tuple[Attribute, ...], category: str) -> Caption:
    """Captions the first image of a (B, H, W, 3) batch (one description feeds one text encoder); the scores say so."""
    scores = model.score(images[0], attributes)
    header = f"{category} by {model.name} ({model.kind}: {'sigmoid per tag' if model.kind == 'siglip' else 'softmax per attribute'})"
    if images.shape[0] > 1:
        header += f"\ngarment_image has {images.shape[0]} images: captioned the first one only"
    return caption_from_description(describe(scores), format_scores(scores, header))
