"""Garment caption: the IDM-VTON description (sleeve + neckline + item) and its TryonNet / GarmentNet prompts."""

from __future__ import annotations

import os

import folder_paths

from ..errors import TryOnInputError
from ..preprocess.garment_caption import caption_from_description, caption_garment, clean_description, load_caption_model
from ..preprocess.garment_taxonomy import CATEGORIES, builtin_taxonomy, load_taxonomy
from ..preprocess.images import as_rgb

FOLDER_KEY = "garment_caption"
NO_MODEL = "none"
BUILTIN = "built-in"
TAXONOMY_DIR = "taxonomies/"


def _listed() -> dict[str, str]:
    """Files of models/garment_caption by their '/'-separated name -> the name folder_paths knows."""
    return {name.replace(os.sep, "/"): name for name in folder_paths.get_filename_list(FOLDER_KEY)}


def caption_model_choices() -> list[str]:
    """Model folders under models/garment_caption: every folder holding a config.json (taxonomies/ excluded)."""
    folders = {name[: -len("/config.json")] for name in _listed() if name.endswith("/config.json") and not name.startswith(TAXONOMY_DIR)}
    return [NO_MODEL] + sorted(folders)


def taxonomy_choices() -> list[str]:
    """The built-in taxonomy, then the .json files under models/garment_caption/taxonomies/."""
    return [BUILTIN] + sorted(name for name in _listed() if name.startswith(TAXONOMY_DIR))


def resolve_listed(input_name: str, name: str) -> str:
    """Full path of a name from our folder list; anything else (e.g. a free path) is refused."""
    listed = _listed()
    if name not in listed:
        raise TryOnInputError(f"{input_name}: '{name}' is not in ComfyUI/models/garment_caption. Put it there and refresh.")
    return folder_paths.get_full_path_or_raise(FOLDER_KEY, listed[name])


class TryOnGarmentCaption:
    DESCRIPTION = (
        "Describes the garment as IDM-VTON's captions do (sleeve length + neckline + item, e.g. 'short sleeve round neck "
        "t-shirts') by zero-shot CLIP/SigLIP classification over a tag taxonomy, and builds the TryonNet prompt "
        "('model is wearing ...') and the GarmentNet prompt ('a photo of ...'). A typed description wins."
    )
    CATEGORY = "try-on"
    RETURN_TYPES = ("STRING", "STRING", "STRING", "STRING")
    RETURN_NAMES = ("description", "tryon_prompt", "garment_prompt", "scores")
    OUTPUT_TOOLTIPS = (
        "The garment description.",
        "'model is wearing <description>': the positive prompt for TryonNet.",
        "'a photo of <description>': the prompt for GarmentNet's conditioning.",
        "The top-3 tags per attribute with their probabilities, or where the description came from.",
    )
    FUNCTION = "caption"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "garment_image": ("IMAGE", {"tooltip": "The garment photo. With a batch, the first image is captioned."}),
                "category": (
                    list(CATEGORIES),
                    {
                        "default": "upper_body",
                        "tooltip": "Which attributes are asked: sleeve length, "
                        "neckline and item for upper_body; length, fit and item for lower_body; sleeve, neckline, length and item for dresses.",
                    },
                ),
                "caption_model": (
                    caption_model_choices(),
                    {
                        "default": NO_MODEL,
                        "tooltip": "A Hugging Face CLIP or SigLIP model folder "
                        "in models/garment_caption (e.g. clip-vit-large-patch14), loaded offline. 'none': use the description input.",
                    },
                ),
            },
            "optional": {
                "description": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": False,
                        "tooltip": "Your own description, e.g. 'short sleeve "
                        "round neck t-shirts'. When not empty it is used as typed and the caption model is not run.",
                    },
                ),
                "taxonomy": (
                    taxonomy_choices(),
                    {
                        "default": BUILTIN,
                        "tooltip": "The tag vocabulary: the pack's built-in one, or a .json file of the same structure in models/garment_caption/taxonomies/.",
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, taxonomy: str = BUILTIN, **kwargs):
        """Re-run when the chosen user taxonomy file is edited."""
        if taxonomy == BUILTIN:
            return BUILTIN
        try:
            return f"{taxonomy}:{os.stat(resolve_listed('taxonomy', taxonomy)).st_mtime_ns}"
        except (TryOnInputError, OSError, FileNotFoundError):
            return taxonomy

    def caption(self, garment_image, category: str, caption_model: str, description: str = "", taxonomy: str = BUILTIN):
        images = as_rgb(garment_image, "garment_image")
        description = clean_description(description or "")
        if description:
            result = caption_from_description(description, "description: typed in the description input (the caption model was not run)")
        elif caption_model == NO_MODEL:
            raise TryOnInputError(
                "caption_model / description: give a description (e.g. 'short sleeve round neck t-shirts') "
                "or choose a caption model from models/garment_caption."
            )
        else:
            tags = builtin_taxonomy() if taxonomy == BUILTIN else load_taxonomy(resolve_listed("taxonomy", taxonomy), "taxonomy", taxonomy)
            if caption_model not in caption_model_choices():
                raise TryOnInputError(
                    f"caption_model: '{caption_model}' is not a model folder in ComfyUI/models/garment_caption "
                    "(a folder with a config.json). Put it there and refresh."
                )
            folder = os.path.dirname(resolve_listed("caption_model", caption_model + "/config.json"))
            model = load_caption_model(folder, caption_model, "caption_model")
            result = caption_garment(model, images, tags.for_category(category, "taxonomy"), category)
        return (result.description, result.tryon_prompt, result.garment_prompt, result.scores)


NODES = {"TryOnGarmentCaption": (TryOnGarmentCaption, "Try-On Garment Caption")}
