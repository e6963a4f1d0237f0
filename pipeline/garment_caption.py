"""What the garment caption node runs: a typed description, or zero-shot tags from a CLIP/SigLIP model, and IDM-VTON's two prompts.

The scoring and the prompt texts are in `preprocess/garment_caption.py`, the tag vocabulary in
`preprocess/garment_taxonomy.py`, the networks in `models/caption_model.py` (docs/preprocessing.md, "Garment caption").
"""

from __future__ import annotations

import torch

from ..errors import TryOnInputError
from ..model_folders import file_identity, resolve
from ..models.caption_model import FOLDER, TAXONOMY_DIR, CaptionModel, listed_files, load_caption_model, model_fingerprint, model_folder_choices
from ..preprocess.garment_caption import AttributeScores, Caption, caption_from_description, caption_from_scores, clean_description, zero_shot_probabilities
from ..preprocess.garment_taxonomy import Attribute, Taxonomy, builtin_taxonomy, load_taxonomy
from ..preprocess.images import as_rgb
from ..preprocess.labels import NONE

BUILTIN = "built-in"


def caption_model_choices() -> list[str]:
    """'none', then the model folders of models/garment_caption (those holding a config.json)."""
    return [NONE] + model_folder_choices()


def taxonomy_choices() -> list[str]:
    """The built-in taxonomy, then the .json files under models/garment_caption/taxonomies/."""
    return [BUILTIN] + sorted(name for name in listed_files() if name.startswith(TAXONOMY_DIR))


def taxonomy_path(taxonomy: str) -> str:
    """The full path of a user taxonomy: a listed .json file under models/garment_caption/taxonomies/."""
    if not (isinstance(taxonomy, str) and taxonomy.startswith(TAXONOMY_DIR) and taxonomy.endswith(".json")):
        raise TryOnInputError(f"taxonomy: '{taxonomy}' is not '{BUILTIN}' or a .json file in ComfyUI/models/{FOLDER}/{TAXONOMY_DIR}. Put it there and refresh.")
    return resolve(FOLDER, taxonomy, "taxonomy")


def load_tags(taxonomy: str) -> Taxonomy:
    return builtin_taxonomy() if taxonomy == BUILTIN else load_taxonomy(taxonomy_path(taxonomy), "taxonomy", taxonomy)


def score_attributes(model: CaptionModel, image: torch.Tensor, attributes: tuple[Attribute, ...]) -> list[AttributeScores]:
    """Zero-shot probabilities of every tag of every attribute for one (H, W, 3) image."""
    image_features = model.encode_image(image)
    logit_scale, logit_bias = model.logit_scale_and_bias()
    scores = []
    for attribute in attributes:
        probabilities = zero_shot_probabilities(image_features, model.attribute_features(attribute), logit_scale, logit_bias, model.kind)
        scores.append(AttributeScores(attribute, tuple(float(p) for p in probabilities.reshape(-1))))
    return scores


def caption_garment(garment_image: torch.Tensor, category: str, caption_model: str, description: str = "", taxonomy: str = BUILTIN) -> Caption:
    """A typed description wins; else the first image of the batch is captioned by the model (one description feeds one text encoder)."""
    images = as_rgb(garment_image, "garment_image")
    description = clean_description(description or "")
    if description:
        return caption_from_description(description, "description: typed in the description input (the caption model was not run)")
    if caption_model == NONE:
        raise TryOnInputError(
            "caption_model / description: give a description (e.g. 'short sleeve round neck t-shirts') or choose a caption model from models/garment_caption."
        )
    attributes = load_tags(taxonomy).for_category(category, "taxonomy")
    model = load_caption_model(caption_model, "caption_model")
    return caption_from_scores(score_attributes(model, images[0], attributes), category, model.name, model.kind, images.shape[0])


def fingerprint(caption_model: str = NONE, taxonomy: str = BUILTIN) -> str:
    """Changes when the chosen taxonomy file is edited or the chosen model's files are replaced, so the node runs again."""
    parts = []
    if taxonomy != BUILTIN:
        try:
            parts.append(repr(file_identity(taxonomy_path(taxonomy))))
        except (TryOnInputError, OSError):
            parts.append(repr(taxonomy))  # the run itself reports it
    if caption_model != NONE:
        try:
            parts.append(model_fingerprint(caption_model))
        except (TryOnInputError, OSError):
            parts.append(repr(caption_model))
    return "|".join(parts) or BUILTIN
