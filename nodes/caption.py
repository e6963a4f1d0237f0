"""Garment caption: the IDM-VTON description (sleeve + neckline + item) and its TryonNet / GarmentNet prompts."""

from __future__ import annotations

from comfy_api.latest import io

from ..pipeline.garment_caption import BUILTIN, caption_garment, caption_model_choices, fingerprint, taxonomy_choices
from ..preprocess.labels import CATEGORIES, NONE


class TryOnGarmentCaption(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TryOnGarmentCaption",
            display_name="Try-On Garment Caption",
            category="try-on",
            description=(
                "Describes the garment as IDM-VTON's captions do (sleeve length + neckline + item, e.g. 'short sleeve round neck "
                "t-shirts') by zero-shot CLIP/SigLIP classification over a tag taxonomy, and builds the TryonNet prompt "
                "('model is wearing ...') and the GarmentNet prompt ('a photo of ...'). A typed description wins."
            ),
            inputs=[
                io.Image.Input("garment_image", tooltip="The garment photo. With a batch, the first image is captioned."),
                io.Combo.Input(
                    "category",
                    options=list(CATEGORIES),
                    default="upper_body",
                    tooltip="Which attributes are asked: sleeve length, neckline and item for upper_body; length, fit and item for lower_body; "
                    "sleeve, neckline, length and item for dresses.",
                ),
                io.Combo.Input(
                    "caption_model",
                    options=caption_model_choices(),
                    default=NONE,
                    tooltip="A Hugging Face CLIP or SigLIP model folder in models/garment_caption (e.g. clip-vit-large-patch14), loaded offline. "
                    "'none': use the description input.",
                ),
                io.String.Input(
                    "description",
                    default="",
                    multiline=False,
                    optional=True,
                    tooltip="Your own description, e.g. 'short sleeve round neck t-shirts'. When not empty it is used as typed and the caption "
                    "model is not run.",
                ),
                io.Combo.Input(
                    "taxonomy",
                    options=taxonomy_choices(),
                    default=BUILTIN,
                    optional=True,
                    tooltip="The tag vocabulary: the pack's built-in one, or a .json file of the same structure in models/garment_caption/taxonomies/.",
                ),
            ],
            outputs=[
                io.String.Output(display_name="description", tooltip="The garment description."),
                io.String.Output(display_name="tryon_prompt", tooltip="'model is wearing <description>': the positive prompt for TryonNet."),
                io.String.Output(display_name="garment_prompt", tooltip="'a photo of <description>': the prompt for GarmentNet's conditioning."),
                io.String.Output(display_name="scores", tooltip="The top-3 tags per attribute with their probabilities, or where the description came from."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, caption_model: str = NONE, taxonomy: str = BUILTIN, **kwargs):
        """Runs again when the chosen taxonomy file is edited or the model's files are replaced."""
        return fingerprint(caption_model, taxonomy)

    @classmethod
    def execute(cls, garment_image, category: str, caption_model: str, description: str = "", taxonomy: str = BUILTIN) -> io.NodeOutput:
        result = caption_garment(garment_image, category, caption_model, description, taxonomy)
        return io.NodeOutput(result.description, result.tryon_prompt, result.garment_prompt, result.scores)


NODES = [TryOnGarmentCaption]
