"""IDM-VTON Customise in a real ComfyUI server: it trains, saves a LoRA the stock loader reproduces, stops on Cancel,
and refuses bad inputs by name; the server keeps working."""

from __future__ import annotations

import io
import time

import comfy_host
import numpy as np
import pytest
import sample_images
from customise_graphs import customise_graph, plain_graph, stock_lora_graph
from PIL import Image

TRAINING_STARTED = "IDM-VTON Customise: training a rank-"  # the node's log line after its first step


@pytest.fixture(scope="module")
def names(server):
    return sample_images.write_tryon_inputs(server.workdir / "input", prefix="customise")


@pytest.fixture
def new_loras(server, fixture_models):
    """The LoRA files a test makes (names in the server's `loras` list); deleted from disk afterwards."""
    before = set(server.get_json("/models/loras"))
    made: list[str] = []

    def created() -> list[str]:
        made[:] = sorted(set(server.get_json("/models/loras")) - before)
        return list(made)

    yield created
    for name in created():
        for folder in (comfy_host.COMFY_DIR / "models" / "loras", fixture_models.parent / "models" / "loras"):
            (folder / name).unlink(missing_ok=True)


def saved_pixels(server, entry: dict) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in server.output_images(entry)]


def run_ok(server, prompt: dict) -> dict:
    entry = server.run(prompt)
    assert comfy_host.execution_error(entry) is None, comfy_host.execution_error(entry)
    return entry


def test_customise_runs_and_the_stock_lora_loader_reproduces_its_model(server, names, new_loras):
    entry = run_ok(server, customise_graph(names, lora_name="server_customised"))
    assert entry["outputs"]["loss_graph"]["images"]  # ComfyUI's Plot Loss Graph drew the loss map
    (lora,) = new_loras()
    assert lora.startswith("server_customised_") and lora.endswith(".safetensors")
    ours = saved_pixels(server, {"outputs": {"save": entry["outputs"]["save"]}})
    stock = saved_pixels(server, run_ok(server, stock_lora_graph(names, lora)))
    assert len(ours) == len(stock) == 1 and np.array_equal(ours[0], stock[0])


def test_bad_inputs_are_refused_by_name_and_the_server_keeps_working(server, names, new_loras):
    zero_steps = customise_graph(names, steps=0)
    answer = server.queue(zero_steps)
    assert answer.get("http_error") == 400 and "steps" in str(answer.get("node_errors")), answer
    raw = customise_graph(names)
    raw["customise"]["inputs"]["model"] = ["tryon", 0]  # the loader's TryonNet, not Apply's
    entry = server.run(raw)
    assert "model: this TryonNet has not been prepared by 'IDM-VTON Apply'" in str(comfy_host.execution_error(entry))
    other_size = customise_graph(names)
    scale = {"image": ["person", 0], "upscale_method": "nearest-exact", "width": 64, "height": 96, "crop": "disabled"}
    other_size["scaled"] = {"class_type": "ImageScale", "inputs": scale}
    other_size["customise"]["inputs"]["person_image"] = ["scaled", 0]
    assert str(comfy_host.execution_error(server.run(other_size))).startswith("IDMVTONCustomise: person_image:")
    assert new_loras() == []
    run_ok(server, customise_graph(names, steps=2))


def test_cancel_during_training_saves_nothing_and_leaves_the_model_clean(server, names, new_loras):
    before = saved_pixels(server, run_ok(server, plain_graph(names)))
    started = server.log_text().count(TRAINING_STARTED)
    answer = server.queue(customise_graph(names, steps=5000, lora_name="cancelled"))
    deadline = time.time() + 180
    while server.log_text().count(TRAINING_STARTED) == started and time.time() < deadline:  # the first step is done
        time.sleep(0.2)
    assert server.log_text().count(TRAINING_STARTED) > started, "training did not start within 180 s"
    server.post_json("/interrupt", {})
    entry = server.wait_history(answer["prompt_id"])
    interrupted = [data for kind, data in entry["status"]["messages"] if kind == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_type"] == "IDMVTONCustomise", entry["status"]  # stopped while training
    assert new_loras() == []
    assert np.array_equal(saved_pixels(server, run_ok(server, plain_graph(names)))[0], before[0])
