"""IDM-VTON Customise (the paper's one-pair fine-tune of TryonNet's decoder, as a LoRA) and Try-On Garment from Person."""

from __future__ import annotations

from comfy_api.latest import io

from ..attention.decoder_lora import TARGETS
from ..pipeline.idm_vton_customise import DEFAULT_LORA_NAME, LOSS_REGIONS, MIN_STEPS, customise_idm_vton
from ..preprocess.garment_from_person import garment_from_person
from ..preprocess.labels import CATEGORIES
from .float_settings import validate_floats

LossMap = io.Custom("LOSS_MAP")  # ComfyUI's training nodes' type: {"loss": [float per step]}, drawn by "Plot Loss Graph"

TARGET_TOOLTIP = (
    "Which TryonNet layers get the LoRA, all in the decoder (output_blocks): 'all decoder layers' (the paper fine-tunes "
    "the decoder: ResBlocks, attention, projections; rank 16 = 26 M parameters on the real model) or 'decoder attention "
    "layers' (q/k/v/out of the self- and cross-attentions: 12 M). GarmentNet and the IP-Adapter are never trained."
)
LOSS_REGION_TOOLTIP = (
    "'whole image': the eps loss over the whole latent, as IDM-VTON was trained. 'mask': only inside the try-on mask "
    "(the garment area), so the model spends its steps on the garment."
)


def _choice_problem(**choices: tuple[str | None, tuple[str, ...]]) -> str | None:
    """The message for the first combo value that is not one of its choices (None: a linked value, checked at run time)."""
    for name, (value, known) in choices.items():
        if value is not None and value not in known:
            return f"{name}: {value!r} is not one of {', '.join(known)}."
    return None


class IDMVTONCustomise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IDMVTONCustomise",
            display_name="IDM-VTON Customise",
            category="try-on/IDM-VTON",
            description=(
                "The IDM-VTON paper's customisation: fine-tunes TryonNet's decoder on one photo of a person wearing a "
                "garment and the photo of that garment (prepared by IDM-VTON Apply), as a LoRA. Saves the LoRA in "
                "models/loras and outputs TryonNet + LoRA without the try-on patches: wire it into a new IDM-VTON Apply "
                "with another garment or person."
            ),
            is_output_node=True,
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The `model` output of IDM-VTON Apply, prepared on the person photo, the mask of its garment and that garment's photo.",
                ),
                io.Conditioning.Input("positive", tooltip="The `positive` output of the same IDM-VTON Apply."),
                io.Vae.Input("vae", tooltip="The SDXL VAE (the one IDM-VTON Apply uses)."),
                io.Image.Input("person_image", tooltip="The same person photo as Apply's person_image: the image the model learns to reproduce."),
                io.Int.Input(
                    "steps",
                    default=100,
                    min=MIN_STEPS,
                    max=10000,
                    tooltip="Training steps (the paper: 100). One TryonNet + GarmentNet pass and a backward each.",
                ),
                io.Float.Input(
                    "learning_rate",
                    default=0.0001,
                    min=0.0000001,
                    max=0.1,
                    step=0.0000001,
                    tooltip="Adam learning rate of the LoRA (1e-4 for rank 16). Lower it if the loss graph climbs.",
                ),
                io.Int.Input("rank", default=16, min=1, max=128, tooltip="LoRA rank: capacity and file size (rank 16, all decoder layers: ~50 MB)."),
                io.Combo.Input("target", options=list(TARGETS), default=TARGETS[0], tooltip=TARGET_TOOLTIP),
                io.Combo.Input("loss_region", options=list(LOSS_REGIONS), default=LOSS_REGIONS[0], tooltip=LOSS_REGION_TOOLTIP),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    tooltip="Seeds the LoRA's initial weights, the timesteps and the noise: same seed, same LoRA.",
                ),
                io.Boolean.Input(
                    "gradient_checkpointing",
                    default=True,
                    tooltip="Recompute the decoder during backward instead of keeping its activations: less memory (at 1024x768 "
                    "in bf16 an estimated 14.5 GB instead of 20 GB in all), each step about 20-25% slower. Same gradients.",
                ),
                io.String.Input(
                    "lora_name",
                    default=DEFAULT_LORA_NAME,
                    tooltip="File name in models/loras (a subfolder with '/'); a number is added, an existing file is never overwritten.",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="TryonNet + the trained LoRA, without the try-on patches: wire it into IDM-VTON Apply."),
                io.String.Output(display_name="lora_name", tooltip="The saved file's name in models/loras (for LoraLoaderModelOnly later)."),
                LossMap.Output(display_name="loss_map", tooltip="The loss of every step: wire it into ComfyUI's 'Plot Loss Graph' node."),
            ],
        )

    @classmethod
    def validate_inputs(cls, learning_rate: float | None = None, target: str | None = None, loss_region: str | None = None) -> bool | str:
        """Unknown choices and a NaN, infinite or out-of-range learning rate are refused before the prompt runs (ComfyUI
        0.3.75 checks neither for V3 nodes); linked values are checked when the node runs."""
        problem = _choice_problem(target=(target, TARGETS), loss_region=(loss_region, LOSS_REGIONS))
        return problem or validate_floats(cls, learning_rate=learning_rate)

    @classmethod
    def execute(
        cls,
        model,
        positive,
        vae,
        person_image,
        steps: int,
        learning_rate: float,
        rank: int,
        target: str,
        loss_region: str,
        seed: int,
        gradient_checkpointing: bool,
        lora_name: str,
    ) -> io.NodeOutput:
        result = customise_idm_vton(
            model,
            positive,
            vae,
            person_image,
            steps=steps,
            learning_rate=learning_rate,
            rank=rank,
            target=target,
            loss_region=loss_region,
            seed=seed,
            gradient_checkpointing=gradient_checkpointing,
            lora_name=lora_name,
        )
        return io.NodeOutput(result.model, result.lora_name, result.loss_map)


class TryOnGarmentFromPerson(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TryOnGarmentFromPerson",
            display_name="Try-On Garment from Person",
            category="try-on",
            description=(
                "Cuts the garment a person wears out of the photo onto white, by the human parsing of 'Try-On Agnostic "
                "Mask' (its `parsing` output), at the try-on size: the garment photo of a customisation pair when you "
                "have only the person photo."
            ),
            inputs=[
                io.Image.Input("person_image", tooltip="The person photo (the one the mask node parsed)."),
                io.Image.Input("parsing", tooltip="The `parsing` output of 'Try-On Agnostic Mask' run on this photo."),
                io.Combo.Input(
                    "category",
                    options=list(CATEGORIES),
                    default="upper_body",
                    tooltip="Which garment: upper_body (upper clothes), lower_body (pants, skirt), dresses (dress, plus upper clothes and skirt).",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="garment_image", tooltip="The garment in place on white, at the person's try-on size."),
                io.Mask.Output(display_name="garment_mask", tooltip="1 on the garment's pixels."),
            ],
        )

    @classmethod
    def validate_inputs(cls, category: str | None = None) -> bool | str:
        return _choice_problem(category=(category, CATEGORIES)) or True

    @classmethod
    def execute(cls, person_image, parsing, category: str) -> io.NodeOutput:
        return io.NodeOutput(*garment_from_person(person_image, parsing, category))


NODES = [IDMVTONCustomise, TryOnGarmentFromPerson]
