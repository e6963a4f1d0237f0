"""API-format test graphs built from stock ComfyUI nodes plus ours."""

from __future__ import annotations

TRYON_NET = "IDM-VTON-tiny-fast/unet/diffusion_pytorch_model.bin"
GARMENT_NET = "IDM-VTON-tiny-fast/unet_encoder/diffusion_pytorch_model.safetensors"
CHECKPOINT = "tiny_sdxl_fast.safetensors"
CLIP_VISION = "tiny_clip_vision.safetensors"
NEGATIVE = "monochrome, lowres, bad anatomy, worst quality, low quality"


def tryon_graph(
    person: str,
    garment: str,
    mask: str,
    densepose: str,
    description: str = "short sleeve round neck t-shirts",
    sampler: str = "euler",
    scheduler: str = "normal",
    steps: int = 2,
    cfg: float = 2.0,
    seed: int = 42,
    use_our_sampler: bool = False,
    model_patch: dict | None = None,
    garment_from: str = "checkpoint",
) -> dict:
    """Person/garment/mask/DensePose image files (in ComfyUI's input dir) -> try-on -> SaveImage."""
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "tryon": {"class_type": "IDMVTONTryonNetLoader", "inputs": {"tryon_net_name": TRYON_NET, "weight_dtype": "default"}},
        "vision": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_VISION}},
        "person": {"class_type": "LoadImage", "inputs": {"image": person}},
        "garment": {"class_type": "LoadImage", "inputs": {"image": garment}},
        "mask_image": {"class_type": "LoadImage", "inputs": {"image": mask}},
        "mask": {"class_type": "ImageToMask", "inputs": {"image": ["mask_image", 0], "channel": "red"}},
        "densepose": {"class_type": "LoadImage", "inputs": {"image": densepose}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": f"model is wearing {description}", "clip": ["ckpt", 1]}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["ckpt", 1]}},
        "garment_text": {"class_type": "CLIPTextEncode", "inputs": {"text": f"a photo of {description}", "clip": ["ckpt", 1]}},
        "apply": {
            "class_type": "IDMVTONApply",
            "inputs": {
                "tryon_model": ["tryon", 0],
                "garment_model": ["ckpt", 0],
                "garment_conditioning": ["garment_text", 0],
                "vae": ["ckpt", 2],
                "person_image": ["person", 0],
                "mask": ["mask", 0],
                "densepose_image": ["densepose", 0],
                "garment_image": ["garment", 0],
                "clip_vision": ["vision", 0],
                "positive": ["positive", 0],
                "negative": ["negative", 0],
            },
        },
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "tryon_test"}},
    }
    if garment_from == "loader":
        graph["garment_net"] = {"class_type": "IDMVTONGarmentNetLoader", "inputs": {"garment_net_name": GARMENT_NET, "weight_dtype": "default"}}
        graph["apply"]["inputs"]["garment_model"] = ["garment_net", 0]
    model_ref = ["apply", 0]
    if model_patch is not None:
        graph["model_patch"] = {**model_patch, "inputs": {**model_patch["inputs"], "model": model_ref}}
        model_ref = ["model_patch", 0]
    sampler_inputs = {
        "model": model_ref,
        "positive": ["apply", 1],
        "negative": ["apply", 2],
        "latent_image": ["apply", 3],
        "seed": seed,
        "steps": steps,
        "cfg": cfg,
        "sampler_name": sampler,
        "scheduler": scheduler,
    }
    if use_our_sampler:
        graph["sample"] = {"class_type": "IDMVTONSampler", "inputs": sampler_inputs}
    else:
        graph["sample"] = {"class_type": "KSampler", "inputs": {**sampler_inputs, "denoise": 1.0}}
    return graph
