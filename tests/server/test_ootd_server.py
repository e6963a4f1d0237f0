"""OOTDiffusion end to end through a real ComfyUI server: person photo -> crop -> mask -> apply -> sample -> paste back."""

from __future__ import annotations

import io
import pathlib
import shutil

import comfy_host
import fixtures_ootd
import numpy as np
import pytest
from fixtures_parsing import paint, scene_labels
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
SIZE = {"width": 192, "height": 256}
SCENE = "ootd_scene.png"


@pytest.fixture(scope="module")
def ootd_server(fixture_models, tmp_path_factory):
    """A server whose model paths hold the pack's fixtures (parsing, pose...) and the OOTDiffusion ones."""
    host = comfy_host.ComfyServer(tmp_path_factory.mktemp("ootd_server") / "work", fixture_models)
    try:
        host.wait_ready()
        for sample in (REPO / "samples").glob("*.png"):
            shutil.copy(sample, host.workdir / "input" / sample.name)
        Image.fromarray(paint(scene_labels())).save(host.workdir / "input" / SCENE)  # a person the tiny parsing nets parse, pants included
        yield host
    finally:
        host.stop()


def ootd_graph(model_type: str = "dc", category: str = "lower_body", sampler: str = "ours", steps: int = 2, person: str = SCENE) -> dict:
    """API prompt: person photo -> Person Crop -> Agnostic Mask -> OOTDiffusion Apply -> sampler -> decode -> Paste Back -> save."""
    graph = {
        "person": {"class_type": "LoadImage", "inputs": {"image": person}},
        "crop": {
            "class_type": "TryOnPersonCrop",
            "inputs": {"image": ["person", 0], **SIZE, "margin": 0.1, "person_source": "auto", "parsing_model": "parsing_atr.onnx"},
        },
        "mask": {
            "class_type": "TryOnAgnosticMask",
            "inputs": {
                "image": ["crop", 0],
                "atr_model": "parsing_atr.onnx",
                "lip_model": "parsing_lip.onnx",
                "pose_model": "body_pose_model.pth",
                "category": category,
                "model_type": model_type,
                "grow": 0,
                "feather": 0,
            },
        },
        "garment_photo": {"class_type": "LoadImage", "inputs": {"image": "garment.png"}},
        "garment": {"class_type": "TryOnFitImage", "inputs": {"image": ["garment_photo", 0], **SIZE, "mode": "pad"}},
        "vton": {"class_type": "OOTDiffusionUNetLoader", "inputs": {"unet_name": fixtures_ootd.unet_name(model_type, "vton"), "weight_dtype": "default"}},
        "garm": {"class_type": "OOTDiffusionUNetLoader", "inputs": {"unet_name": fixtures_ootd.unet_name(model_type, "garm"), "weight_dtype": "default"}},
        "sd15": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": fixtures_ootd.SD15_CHECKPOINT}},
        "vision": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": fixtures_ootd.VISION_FILE}},
        "apply": {
            "class_type": "OOTDiffusionApply",
            "inputs": {
                "vton_model": ["vton", 0],
                "garment_model": ["garm", 0],
                "vae": ["sd15", 2],
                "clip": ["sd15", 1],
                "clip_vision": ["vision", 0],
                "person_image": ["crop", 0],
                "mask": ["mask", 0],
                "garment_image": ["garment", 0],
                "model_type": model_type,
                "category": category,
            },
        },
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["sd15", 2]}},
        "paste": {
            "class_type": "TryOnPasteBack",
            "inputs": {"original_image": ["person", 0], "tryon_image": ["decode", 0], "mask": ["mask", 0], "grow": 8, "feather": 8, "crop_info": ["crop", 2]},
        },
        "save": {"class_type": "SaveImage", "inputs": {"images": ["paste", 0], "filename_prefix": "ootd_test"}},
    }
    if sampler == "ours":
        graph["ootd_sampler"] = {"class_type": "OOTDiffusionSampler", "inputs": {"mode": "unipc"}}
        graph["sigmas"] = {"class_type": "OOTDiffusionScheduler", "inputs": {"model": ["apply", 0], "steps": steps, "schedule": "karras"}}
        graph["sample"] = {
            "class_type": "SamplerCustom",
            "inputs": {
                "model": ["apply", 0],
                "add_noise": True,
                "noise_seed": 42,
                "cfg": 2.0,
                "positive": ["apply", 1],
                "negative": ["apply", 2],
                "sampler": ["ootd_sampler", 0],
                "sigmas": ["sigmas", 0],
                "latent_image": ["apply", 3],
            },
        }
    else:
        graph["sample"] = {
            "class_type": "KSampler",
            "inputs": {
                "model": ["apply", 0],
                "seed": 42,
                "steps": steps,
                "cfg": 2.0,
                "sampler_name": sampler,
                "scheduler": "karras",
                "positive": ["apply", 1],
                "negative": ["apply", 2],
                "latent_image": ["apply", 3],
                "denoise": 1.0,
            },
        }
    return graph


def run_ok(server, graph) -> np.ndarray:
    entry = server.run(graph)
    assert comfy_host.execution_error(entry) is None, comfy_host.execution_error(entry)
    (png,) = server.output_images(entry)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_person_photo_to_pasted_try_on_with_the_original_sampler(ootd_server):
    """dc, lower_body: crop -> mask -> OOTDiffusion Apply -> SamplerCustom with our sampler and sigmas -> decode -> paste back."""
    result = run_ok(ootd_server, ootd_graph("dc", "lower_body"))
    person = np.asarray(Image.open(ootd_server.workdir / "input" / SCENE).convert("RGB"))
    assert result.shape == person.shape  # pasted back into the original photo
    unchanged = (result == person).all(axis=-1)
    assert 0.2 < unchanged.mean() < 1.0  # the try-on changed the garment area and kept the rest


def test_a_stock_ksampler_runs_the_patched_model(ootd_server):
    result = run_ok(ootd_server, ootd_graph("hd", "upper_body", sampler="dpmpp_2m", person="person.png"))
    assert result.shape == np.asarray(Image.open(REPO / "samples" / "person.png")).shape[:2] + (3,)


def test_hd_with_lower_body_fails_with_a_clear_message_and_the_server_keeps_working(ootd_server):
    error = comfy_host.execution_error(ootd_server.run(ootd_graph("hd", "lower_body")))
    assert error and "category: the hd model" in error and "upper_body" in error
    assert ootd_server.alive()
