"""Zero-shot garment captioning over the tag taxonomy (the scoring) and the IDM-VTON prompts.

Per attribute (sleeve length, neckline, item, ...) each tag's text feature is the mean of its L2-normalised
template embeddings (renormalised). The image feature is compared with them by cosine similarity times the
model's `logit_scale.exp()` (plus `logit_bias` for SigLIP). Probabilities:
- CLIP was trained with a softmax over the batch's texts, so its scores are a **softmax over the attribute's tags**
  (they sum to 1 per attribute);
- SigLIP was trained with a per-pair sigmoid, so its scores are **independent sigmoids** (they need not sum to 1).
The chosen tag is the highest score either way (ties go to the tag listed first). Everything runs in eval mode
without sampling, so the same image gives the same caption.

Pure functions over text and tensors (docs/preprocessing.md, "Garment caption"); the CLIP/SigLIP network itself is
loaded and run by `models/caption_model.py`, and `pipeline/garment_caption.py` ties them together for the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .garment_taxonomy import Attribute, Tag
from .images import to_uint8

TRYON_PREFIX = "model is wearing "
GARMENT_PREFIX = "a photo of "


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
    return Image.fromarray(np.ascontiguousarray(to_uint8(image)))  # (H, W, 3) uint8: RGB


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


def caption_from_scores(scores: list[AttributeScores], category: str, model_name: str, kind: str, batch: int = 1) -> Caption:
    """The caption made of each attribute's best tag; its scores text says which model scored how, and that a batch gave its first image."""
    header = f"{category} by {model_name} ({kind}: {'sigmoid per tag' if kind == 'siglip' else 'softmax per attribute'})"
    if batch > 1:
        header += f"\ngarment_image has {batch} images: captioned the first one only"
    return caption_from_description(describe(scores), format_scores(scores, header))
