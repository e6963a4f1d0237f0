"""Writes the example workflows in workflows/ (ComfyUI UI format) from the installed node definitions.

Run by a developer after a node's inputs change: `.venv/bin/python tools/build_workflows.py`. It starts the
embedded ComfyUI with the tiny fixtures to read `/object_info`, then writes the four workflows. The files
are committed; tests load them as they are (API prompts are always derived from them, never kept).
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests" / "support")]

from ui_workflow import UIWorkflow  # noqa: E402

WORKFLOWS = REPO / "workflows"
NEGATIVE = "monochrome, lowres, bad anatomy, worst quality, low quality"

MODELS_NOTE = """## Model files (see the README's model table)
- models/idm_vton/IDM-VTON/unet/diffusion_pytorch_model.bin + config.json
  (yisol/IDM-VTON, CC BY-NC-SA 4.0, non-commercial). A converted fp16 .safetensors works too.
- models/checkpoints/sd_xl_base_1.0.safetensors (any SDXL base 1.0: GarmentNet, CLIP, VAE)
- models/clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors (the IP-Adapter ViT-H)
- models/humanparsing/parsing_atr.onnx, parsing_lip.onnx
- models/openpose/body_pose_model.pth
- models/densepose/densepose_r50_fpn_dl.torchscript
- models/garment_caption/clip-vit-large-patch14/ (any HF CLIP/SigLIP folder)
Pick your own file names in the loaders if they differ."""

DEFAULTS_NOTE = """## IDM-VTON's defaults
KSampler: seed 42, 30 steps, cfg 2.0, ddpm + ddim_uniform (= the original's leading DDPM timesteps).
Any sampler/scheduler works. Person crop: 768x1024 (3:4), what IDM-VTON was trained on.
Paste Back keeps every pixel outside the feathered mask identical to your photo."""


class Builder:
    def __init__(self, object_info: dict):
        self.w = UIWorkflow(object_info)

    def models(self, x: int, y: int, tryon_name: str = "IDM-VTON/unet/diffusion_pytorch_model.bin"):
        w = self.w
        self.checkpoint = w.node("CheckpointLoaderSimple", (x, y), {"ckpt_name": "sd_xl_base_1.0.safetensors"}, title="SDXL base 1.0 (GarmentNet, CLIP, VAE)")
        self.tryon = w.node("IDMVTONTryonNetLoader", (x, y + 140), {"tryon_net_name": tryon_name})
        self.vision = w.node(
            "CLIPVisionLoader", (x, y + 270), {"clip_name": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"}, title="CLIP Vision ViT-H (IP-Adapter)"
        )

    def prompts(self, x: int, y: int, caption):
        w = self.w
        clip = self.checkpoint.out("CLIP")
        self.positive = w.node("CLIPTextEncode", (x, y), {"text": ""}, {"clip": clip, "text": caption.out("tryon_prompt")}, title="TryonNet prompt")
        self.garment_text = w.node(
            "CLIPTextEncode", (x, y + 130), {"text": ""}, {"clip": clip, "text": caption.out("garment_prompt")}, title="GarmentNet prompt"
        )
        self.negative = w.node("CLIPTextEncode", (x, y + 260), {"text": NEGATIVE}, {"clip": clip}, title="Negative prompt")

    def apply_and_sample(self, x: int, y: int, person, mask, densepose, garment):
        self.apply = self.apply_node(x, y, self.tryon.out(0), person, mask, densepose, garment, self.garment_text.out(0), self.positive.out(0))
        self.sample_and_decode(x + 380, y)

    def apply_node(self, x: int, y: int, tryon_model, person, mask, densepose, garment, garment_text, positive, title: str | None = None):
        """IDM-VTON Apply wired to the loaders (GarmentNet, VAE, CLIP vision) and the negative prompt."""
        links = {
            "tryon_model": tryon_model,
            "garment_model": self.checkpoint.out("MODEL"),
            "garment_conditioning": garment_text,
            "vae": self.checkpoint.out("VAE"),
            "person_image": person,
            "mask": mask,
            "densepose_image": densepose,
            "garment_image": garment,
            "clip_vision": self.vision.out(0),
            "positive": positive,
            "negative": self.negative.out(0),
        }
        return self.w.node("IDMVTONApply", (x, y), {}, links, title=title)

    def sample_and_decode(self, x: int, y: int):
        """KSampler with IDM-VTON's defaults on `self.apply`, and the VAE decode below it."""
        w = self.w
        self.sampler = w.node(
            "KSampler",
            (x, y),
            {"seed": 42, "steps": 30, "cfg": 2.0, "sampler_name": "ddpm", "scheduler": "ddim_uniform", "denoise": 1.0},
            {
                "model": self.apply.out("model"),
                "positive": self.apply.out("positive"),
                "negative": self.apply.out("negative"),
                "latent_image": self.apply.out("latent"),
            },
        )
        self.decode = w.node("VAEDecode", (x, y + 330), {}, {"samples": self.sampler.out(0), "vae": self.checkpoint.out("VAE")})

    def paste_and_save(self, x: int, y: int, original, mask, crop_info, prefix: str):
        w = self.w
        self.paste = w.node(
            "TryOnPasteBack",
            (x, y),
            {"grow": 8, "feather": 8},
            {"original_image": original, "tryon_image": self.decode.out(0), "mask": mask, "crop_info": crop_info},
        )
        w.node("SaveImage", (x + 380, y), {"filename_prefix": prefix}, {"images": self.paste.out(0)}, width=420)
        w.node("PreviewImage", (x, y + 260), {}, {"images": self.decode.out(0)}, title="Try-on crop (before paste-back)")

    def automatic_person_inputs(self, category: str, model_type: str, densepose_y: int = 700, preview: bool = True, densepose: bool = True):
        """Person photo -> Person Crop (found by the parsing model) -> Agnostic Mask + DensePose on the crop (None
        with `densepose` off: OOTDiffusion needs none)."""
        w = self.w
        person = w.node("LoadImage", (0, 0), {"image": "person.png"}, title="Person photo")
        crop = w.node(
            "TryOnPersonCrop",
            (0, 360),
            {"width": 768, "height": 1024, "margin": 0.1, "person_source": "auto", "parsing_model": "parsing_atr.onnx"},
            {"image": person.out("IMAGE")},
        )
        mask = w.node(
            "TryOnAgnosticMask",
            (400, 0),
            {
                "atr_model": "parsing_atr.onnx",
                "lip_model": "parsing_lip.onnx",
                "pose_model": "body_pose_model.pth",
                "category": category,
                "model_type": model_type,
                "grow": 0,
                "feather": 0,
            },
            {"image": crop.out("image")},
        )
        if preview:
            w.node("PreviewImage", (400, 380), {}, {"images": mask.out("preview")}, title="Mask preview (grey = repainted)")
        if not densepose:
            return person, crop, mask, None
        dense = w.node("TryOnDensePose", (400, densepose_y), {"densepose_model": "densepose_r50_fpn_dl.torchscript"}, {"image": crop.out("image")})
        return person, crop, mask, dense

    def garment_and_prompts(self, garment_file: str, category: str, tryon_name: str = "IDM-VTON/unet/diffusion_pytorch_model.bin"):
        """Garment photo (fitted) -> caption -> the three prompts, plus the model loaders; returns the fitted garment."""
        garment = self.garment(800, 0, garment_file)
        caption = self.w.node(
            "TryOnGarmentCaption",
            (800, 500),
            {"category": category, "caption_model": "clip-vit-large-patch14", "description": ""},
            {"garment_image": garment.out(0)},
        )
        self.models(1200, 0, tryon_name)
        self.prompts(1200, 420, caption)
        return garment

    def garment(self, x: int, y: int, file: str, title: str = "Garment photo"):
        load = self.w.node("LoadImage", (x, y), {"image": file}, title=title)
        return self.w.node("TryOnFitImage", (x, y + 340), {"width": 768, "height": 1024, "mode": "pad"}, {"image": load.out("IMAGE")})


def upper_body(
    object_info: dict,
    category: str = "upper_body",
    tryon_name: str = "IDM-VTON/unet/diffusion_pytorch_model.bin",
    model_type: str = "hd",
    garment_file: str = "garment.png",
    prefix: str = "idm_vton_upper_body",
) -> UIWorkflow:
    """The full automatic pipeline: crop -> mask + DensePose + caption -> apply -> KSampler -> decode -> paste-back."""
    b = Builder(object_info)
    w = b.w
    w.note(MODELS_NOTE, (0, -330), (760, 300), "Where the model files go")
    w.note(DEFAULTS_NOTE, (800, -330), (620, 300), "Settings")
    person, crop, mask, densepose = b.automatic_person_inputs(category, model_type)
    garment = b.garment_and_prompts(garment_file, category, tryon_name)
    b.apply_and_sample(1600, 0, crop.out("image"), mask.out("mask"), densepose.out(0), garment.out(0))
    b.paste_and_save(2400, 0, person.out("IMAGE"), mask.out("mask"), crop.out("crop_info"), prefix)
    return w


def manual_mask(object_info: dict) -> UIWorkflow:
    """The same pipeline with the mask drawn in ComfyUI's mask editor on the person photo."""
    b = Builder(object_info)
    w = b.w
    w.note(MODELS_NOTE, (0, -330), (760, 300), "Where the model files go")
    w.note(
        "## Your own mask\nRight-click the person photo > Open in MaskEditor, paint over the garment area (arms and neck too "
        "if the new garment changes them), Save. The painted area is repainted; everything else stays your photo.\n"
        "The crop follows the mask (person_source: mask).",
        (800, -330),
        (620, 300),
        "Mask editor",
    )
    person = w.node("LoadImage", (0, 0), {"image": "person_masked.png"}, title="Person photo (mask painted in the mask editor)")
    crop = w.node(
        "TryOnPersonCrop",
        (0, 360),
        {"width": 768, "height": 1024, "margin": 0.3, "person_source": "mask"},
        {"image": person.out("IMAGE"), "mask": person.out("MASK")},
    )
    densepose = w.node("TryOnDensePose", (400, 0), {"densepose_model": "densepose_r50_fpn_dl.torchscript"}, {"image": crop.out("image")})
    garment = b.garment_and_prompts("garment.png", "upper_body")
    b.apply_and_sample(1600, 0, crop.out("image"), crop.out("mask"), densepose.out(0), garment.out(0))
    b.paste_and_save(2400, 0, person.out("IMAGE"), crop.out("mask"), crop.out("crop_info"), "idm_vton_manual_mask")
    return w


def dresscode(object_info: dict) -> UIWorkflow:
    """IDM-VTON-DC on a dress (switch `category` on the mask and caption nodes for lower or upper body)."""
    w = upper_body(
        object_info,
        category="dresses",
        tryon_name="IDM-VTON-DC/unet/diffusion_pytorch_model.bin",
        model_type="dc",
        garment_file="garment_dress.png",
        prefix="idm_vton_dresscode",
    )
    w.nodes[0]["widgets_values"] = [
        MODELS_NOTE.replace("IDM-VTON/unet", "IDM-VTON-DC/unet").replace("(yisol/IDM-VTON,", "(yisol/IDM-VTON-DC; the loader needs no config.json,")
    ]
    w.nodes[1]["widgets_values"] = [
        "## DressCode categories\nSet `category` to the same value on BOTH the mask node and the "
        "caption node: upper_body, lower_body or dresses, and load a matching garment photo. "
        "lower_body needs a photo that shows the legs. model_type 'dc' uses the DressCode arm width.\n\n" + DEFAULTS_NOTE
    ]
    return w


def batch(object_info: dict) -> UIWorkflow:
    """Several garments on one person in one queue: a garment batch, one mask/DensePose, one typed description."""
    b = Builder(object_info)
    w = b.w
    w.note(MODELS_NOTE, (0, -330), (760, 300), "Where the model files go")
    w.note(
        "## Batch\nThree garments are batched with ImageBatch; the person, mask and DensePose are shared (batch 1).\n"
        "Each output image is one garment. The prompts are shared by the batch, so the description is typed once "
        "(the caption node captions only the first image of a batch). Several persons work the same way: batch "
        "the persons instead, with one garment.",
        (800, -330),
        (620, 300),
        "Batch",
    )
    person, crop, mask, densepose = b.automatic_person_inputs("upper_body", "hd", densepose_y=380, preview=False)
    garments = [
        b.garment(800 + 360 * i, 0, name, f"Garment {i + 1}") for i, name in enumerate(("garment.png", "garment_long_sleeve.png", "garment_striped.png"))
    ]
    first = w.node("ImageBatch", (800, 700), {}, {"image1": garments[0].out(0), "image2": garments[1].out(0)})
    all_garments = w.node("ImageBatch", (1160, 700), {}, {"image1": first.out(0), "image2": garments[2].out(0)})
    caption = w.node(
        "TryOnGarmentCaption",
        (800, 850),
        {"category": "upper_body", "caption_model": "none", "description": "t-shirts"},
        {"garment_image": all_garments.out(0)},
    )
    b.models(1900, 0)
    b.prompts(1900, 420, caption)
    b.apply_and_sample(2300, 0, crop.out("image"), mask.out("mask"), densepose.out(0), all_garments.out(0))
    b.paste_and_save(3100, 0, person.out("IMAGE"), mask.out("mask"), crop.out("crop_info"), "idm_vton_batch")
    return w


OOTD_MODELS_NOTE = """## Model files (see the README's model table)
- models/diffusion_models/ootd/ootd_{kind}/checkpoint-36000/unet_vton/ and unet_garm/:
  diffusion_pytorch_model.safetensors + config.json each, from levihsu/OOTDiffusion's
  checkpoints/ootd/ (CC BY-NC-SA 4.0, non-commercial). Copy the ootd/ folder as it is.
- models/checkpoints/v1-5-pruned-emaonly.safetensors (any SD1.5 checkpoint: its CLIP text encoder and VAE;
  its MODEL is not used)
- models/clip_vision/clip-vit-large-patch14.safetensors (openai/clip-vit-large-patch14's model.safetensors)
- models/humanparsing/parsing_atr.onnx, parsing_lip.onnx; models/openpose/body_pose_model.pth
Pick your own file names in the loaders if they differ."""

OOTD_DEFAULTS_NOTE = """## OOTDiffusion's defaults
SamplerCustom with 'OOTDiffusion Sampler' (unipc) and 'OOTDiffusion Scheduler' (20 steps, karras):
the original's scheduler and its repaint outside the mask, cfg 2.0 as its demo. Any KSampler also
works with the apply node's outputs (then ComfyUI's own noise_mask repaint, see the README).
There is no text prompt: OOTDiffusion's text tokens are fixed (hd) or the category word (dc)."""


def ootd(
    object_info: dict, kind: str = "hd", category: str = "upper_body", garment_file: str = "garment.png", prefix: str = "ootd_hd_upper_body"
) -> UIWorkflow:
    """OOTDiffusion: crop -> mask -> OOTDiffusion Apply -> SamplerCustom (the original's sampler) -> decode -> paste-back."""
    b = Builder(object_info)
    w = b.w
    w.note(OOTD_MODELS_NOTE.replace("{kind}", kind), (0, -330), (760, 300), "Where the model files go")
    settings = OOTD_DEFAULTS_NOTE
    if kind == "dc":
        settings = (
            "## DressCode categories\nSet `category` to the same value on BOTH the mask node and the apply node: "
            "upper_body, lower_body or dresses, and load a matching garment photo. lower_body needs a photo that "
            "shows the legs. model_type 'dc' on both (DressCode arm width; the ootd_dc UNets).\n\n" + OOTD_DEFAULTS_NOTE
        )
    w.note(settings, (800, -330), (620, 300), "Settings")
    person, crop, mask, _ = b.automatic_person_inputs(category, kind, densepose=False)
    garment = b.garment(800, 0, garment_file)
    unet = "ootd/ootd_{}/checkpoint-36000/unet_{}/diffusion_pytorch_model.safetensors"
    vton = w.node("OOTDiffusionUNetLoader", (1200, 0), {"unet_name": unet.format(kind, "vton")}, title="unet_vton")
    garm = w.node("OOTDiffusionUNetLoader", (1200, 140), {"unet_name": unet.format(kind, "garm")}, title="unet_garm")
    sd15 = w.node("CheckpointLoaderSimple", (1200, 280), {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}, title="SD1.5 (text encoder, VAE)")
    vision = w.node("CLIPVisionLoader", (1200, 420), {"clip_name": "clip-vit-large-patch14.safetensors"}, title="CLIP Vision ViT-L/14")
    apply = w.node(
        "OOTDiffusionApply",
        (1600, 0),
        {"model_type": kind, "category": category},
        {
            "vton_model": vton.out(0),
            "garment_model": garm.out(0),
            "vae": sd15.out("VAE"),
            "clip": sd15.out("CLIP"),
            "clip_vision": vision.out(0),
            "person_image": crop.out("image"),
            "mask": mask.out("mask"),
            "garment_image": garment.out(0),
        },
    )
    sampler = w.node("OOTDiffusionSampler", (1600, 330), {"mode": "unipc"})
    sigmas = w.node("OOTDiffusionScheduler", (1600, 450), {"steps": 20, "schedule": "karras"}, {"model": apply.out("model")})
    sample = w.node(
        "SamplerCustom",
        (1980, 0),
        {"add_noise": True, "noise_seed": 42, "cfg": 2.0},
        {
            "model": apply.out("model"),
            "positive": apply.out("positive"),
            "negative": apply.out("negative"),
            "sampler": sampler.out(0),
            "sigmas": sigmas.out(0),
            "latent_image": apply.out("latent"),
        },
    )
    b.decode = w.node("VAEDecode", (1980, 400), {}, {"samples": sample.out(0), "vae": sd15.out("VAE")})
    b.paste_and_save(2400, 0, person.out("IMAGE"), mask.out("mask"), crop.out("crop_info"), prefix)
    return w


def ootd_dc(object_info: dict) -> UIWorkflow:
    """OOTDiffusion DressCode (full body) on a dress; switch `category` on the mask and apply nodes."""
    return ootd(object_info, kind="dc", category="dresses", garment_file="garment_dress.png", prefix="ootd_dc")


CUSTOMISE_NOTE = """## Customise on one photo pair (the IDM-VTON paper's customisation)
1. The person photo wears garment A. 'Try-On Garment from Person' cuts A out of the photo onto white, from the
   mask node's parsing. Have a flat-lay photo of A? Load it and wire it into 'Apply on the pair' as garment_image.
2. 'IDM-VTON Customise' trains a LoRA on TryonNet's decoder on that pair (100 steps), saves it in models/loras
   (never overwriting) and outputs TryonNet + LoRA. 'Plot Loss Graph' draws its loss.
3. 'Apply with garment B' dresses the same person in garment B with the customised TryonNet.
Later: LoraLoaderModelOnly on the TryonNet loader with the saved file gives the same model; skip steps 1-2.
Needs a 24 GB GPU at 768x1024 (gradient_checkpointing on). IDM-VTON: CC BY-NC-SA 4.0, non-commercial."""


def customise(object_info: dict) -> UIWorkflow:
    """Person photo wearing A + A (cut out of the photo) -> Apply on the pair -> Customise -> Apply with B -> paste-back."""
    b = Builder(object_info)
    w = b.w
    w.note(MODELS_NOTE, (0, -330), (760, 300), "Where the model files go")
    w.note(CUSTOMISE_NOTE, (800, -330), (900, 300), "Customise")
    person, crop, mask, densepose = b.automatic_person_inputs("upper_body", "hd")
    worn = w.node("TryOnGarmentFromPerson", (800, 0), {"category": "upper_body"}, {"person_image": crop.out("image"), "parsing": mask.out("parsing")})
    w.node("PreviewImage", (800, 200), {}, {"images": worn.out("garment_image")}, title="Garment A (cut out of the photo)")
    new_garment = b.garment(800, 520, "garment.png", "Garment B photo")
    b.models(1200, 0)
    clip, vae = b.checkpoint.out("CLIP"), b.checkpoint.out("VAE")
    b.negative = w.node("CLIPTextEncode", (1200, 420), {"text": NEGATIVE}, {"clip": clip}, title="Negative prompt")
    prompts = {}
    for label, garment, y in (("A", worn.out("garment_image"), 560), ("B", new_garment.out(0), 1100)):
        caption = w.node(
            "TryOnGarmentCaption",
            (1200, y),
            {"category": "upper_body", "caption_model": "clip-vit-large-patch14", "description": ""},
            {"garment_image": garment},
            title=f"Garment {label} caption",
        )
        tryon_text = w.node("CLIPTextEncode", (1580, y), {"text": ""}, {"clip": clip, "text": caption.out("tryon_prompt")}, title=f"TryonNet prompt {label}")
        garment_text = w.node(
            "CLIPTextEncode", (1580, y + 130), {"text": ""}, {"clip": clip, "text": caption.out("garment_prompt")}, title=f"GarmentNet prompt {label}"
        )
        prompts[label] = (garment, tryon_text.out(0), garment_text.out(0))

    def apply(x: int, y: int, tryon_model, label: str, title: str):
        garment, positive, garment_text = prompts[label]
        return b.apply_node(x, y, tryon_model, crop.out("image"), mask.out("mask"), densepose.out(0), garment, garment_text, positive, title)

    pair = apply(2000, 0, b.tryon.out(0), "A", "Apply on the pair (person + garment A)")
    tuned = w.node(
        "IDMVTONCustomise",
        (2000, 420),
        {"steps": 100, "learning_rate": 0.0001, "rank": 16, "seed": 0, "gradient_checkpointing": True, "lora_name": "idm_vton_customised"},
        {"model": pair.out("model"), "positive": pair.out("positive"), "vae": vae, "person_image": crop.out("image")},
    )
    w.node("LossGraphNode", (2000, 900), {"filename_prefix": "idm_vton_customise_loss"}, {"loss": tuned.out("loss_map")})
    b.apply = apply(2400, 0, tuned.out("model"), "B", "Apply with garment B (customised TryonNet)")
    b.sample_and_decode(2800, 0)
    b.paste_and_save(3200, 0, person.out("IMAGE"), mask.out("mask"), crop.out("crop_info"), "idm_vton_customise")
    return w


BUILDERS = {
    "idm_vton_upper_body": upper_body,
    "idm_vton_manual_mask": manual_mask,
    "idm_vton_dresscode": dresscode,
    "idm_vton_batch": batch,
    "ootd_hd_upper_body": ootd,
    "ootd_dc": ootd_dc,
    "idm_vton_customise": customise,
}


def main() -> int:
    import shutil

    import comfy_host

    yaml = comfy_host.write_fixture_models(REPO / ".comfyui" / "fixtures", ("fast",))  # the cache `make run` uses too
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="build_workflows_"))
    server = comfy_host.ComfyServer(workdir, yaml)
    try:
        server.wait_ready()
        object_info = server.get_json("/object_info")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for name, build in BUILDERS.items():
        build(object_info).save(WORKFLOWS / f"{name}.json")
        print(WORKFLOWS / f"{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
