"""End to end through a real ComfyUI server: stock nodes + ours, several samplers, a MODEL patch in front."""

from __future__ import annotations

import io
import json
import pathlib

import comfy_host
import numpy as np
import pytest
from graphs import tryon_graph
from PIL import Image
from sample_images import write_tryon_inputs

SAVED_PROMPT = pathlib.Path(__file__).resolve().parents[1] / "data" / "api_prompt_v0_2.json"


@pytest.fixture(scope="module")
def inputs(server):
    return write_tryon_inputs(server.workdir / "input")


def run_ok(server, graph) -> np.ndarray:
    entry = server.run(graph)
    assert comfy_host.execution_error(entry) is None, comfy_host.execution_error(entry)
    (png,) = server.output_images(entry)
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.mark.parametrize("sampler,scheduler", [("euler", "normal"), ("dpmpp_2m", "karras"), ("ddpm", "ddim_uniform")])
def test_tryon_runs_with_any_sampler_and_scheduler(server, inputs, sampler, scheduler):
    image = run_ok(server, tryon_graph(inputs["person"], inputs["garment"], inputs["mask"], inputs["densepose"], sampler=sampler, scheduler=scheduler))
    assert image.shape == (128, 96, 3)


@pytest.mark.parametrize(
    "patch",
    [
        {"class_type": "FreeU_V2", "inputs": {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}},
        {"class_type": "ModelSamplingDiscrete", "inputs": {"sampling": "eps", "zsnr": False}},
    ],
    ids=["FreeU_V2", "ModelSamplingDiscrete"],
)
def test_a_stock_model_patch_in_front_works(server, inputs, patch):
    graph = tryon_graph(inputs["person"], inputs["garment"], inputs["mask"], inputs["densepose"], model_patch=patch)
    assert run_ok(server, graph).shape == (128, 96, 3)


def test_garment_net_loader_and_our_sampler(server, inputs):
    graph = tryon_graph(
        inputs["person"],
        inputs["garment"],
        inputs["mask"],
        inputs["densepose"],
        garment_from="loader",
        use_our_sampler=True,
        sampler="ddpm",
        scheduler="ddim_uniform",
    )
    assert run_ok(server, graph).shape == (128, 96, 3)


def test_a_bad_input_fails_with_a_clear_message_and_the_server_keeps_working(server, inputs):
    graph = tryon_graph(inputs["person"], inputs["garment"], inputs["mask"], inputs["densepose"])
    graph["apply"]["inputs"]["garment_model"] = ["tryon", 0]  # TryonNet wired as GarmentNet
    error = comfy_host.execution_error(server.run(graph))
    assert error and "garment_model" in error and "GarmentNet" in error
    assert server.alive()
    good = tryon_graph(inputs["person"], inputs["garment"], inputs["mask"], inputs["densepose"], seed=7)
    assert run_ok(server, good).shape == (128, 96, 3)


def test_an_api_prompt_saved_from_the_classic_nodes_of_v0_2_runs_unchanged_with_the_new_input_at_its_default(server, inputs):
    """tests/data/api_prompt_v0_2.json was written from the pack's classic (pre-V3) nodes, with every widget value as
    the frontend's "Export (API)" writes it; it names the input files `inputs` writes. It must run as it is."""
    prompt = json.loads(SAVED_PROMPT.read_text())
    classes = {node["class_type"] for node in prompt.values()}
    assert {"IDMVTONTryonNetLoader", "IDMVTONGarmentNetLoader", "TryOnFitImage", "IDMVTONApply", "IDMVTONSampler"} <= classes
    assert set(inputs.values()) == {node["inputs"]["image"] for node in prompt.values() if node["class_type"] == "LoadImage"}
    saved = run_ok(server, prompt)
    assert saved.shape == (128, 96, 3)
    (apply,) = [node for node in prompt.values() if node["class_type"] == "IDMVTONApply"]
    assert "ip_image_preprocess" not in apply["inputs"]  # the input came in 0.3: the saved prompt runs with its default
    apply["inputs"]["ip_image_preprocess"] = "original"
    assert np.array_equal(run_ok(server, prompt), saved)
    apply["inputs"]["ip_image_preprocess"] = "comfyui"  # the IP tokens of 0.2 (ComfyUI's CLIP resize) give another image
    assert not np.array_equal(run_ok(server, prompt), saved)
