"""Every shipped workflow (UI format) converts to API format through /object_info and runs in the real server.

The workflows name the real model files; the tiny fixture tree holds stand-ins under those names, so the
files run unchanged apart from the step count and working size, which are lowered to keep the suite fast.
"""

from __future__ import annotations

import io
import json
import pathlib
import shutil

import comfy_host
import numpy as np
import pytest
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
FAST = {
    "KSampler": {"steps": 2},
    "OOTDiffusionScheduler": {"steps": 2},
    "IDMVTONCustomise": {"steps": 2},
    "TryOnPersonCrop": {"width": 192, "height": 256},
    "TryOnFitImage": {"width": 192, "height": 256},
}
# The model folders each family's notes must name (where its files go).
NOTE_FOLDERS = {
    "idm_vton": ("models/idm_vton", "models/checkpoints", "models/clip_vision", "models/densepose"),
    "ootd": ("models/diffusion_models", "models/checkpoints", "models/clip_vision"),
}


def load_api(path: pathlib.Path, object_info: dict) -> dict:
    import workflow_api

    return workflow_api.to_api(json.loads(path.read_text()), object_info)


def speed_up(prompt: dict) -> dict:
    for node in prompt.values():
        node["inputs"].update(FAST.get(node["class_type"], {}))
    return prompt


@pytest.fixture(scope="module")
def object_info(server):
    for sample in (REPO / "samples").glob("*.png"):
        shutil.copy(sample, server.workdir / "input" / sample.name)
    return server.get_json("/object_info")


def test_the_seven_workflows_are_shipped():
    assert {p.stem for p in WORKFLOWS} == {
        "idm_vton_customise",
        "idm_vton_upper_body",
        "idm_vton_manual_mask",
        "idm_vton_dresscode",
        "idm_vton_batch",
        "ootd_hd_upper_body",
        "ootd_dc",
    }


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_has_notes_naming_the_model_folders(path):
    workflow = json.loads(path.read_text())
    notes = " ".join(str(v) for n in workflow["nodes"] if n["type"] == "Note" for v in n["widgets_values"])
    family = "ootd" if path.stem.startswith("ootd") else "idm_vton"
    for folder in NOTE_FOLDERS[family]:
        assert folder in notes, f"{path.name}: no note says what goes in {folder}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_converts_and_runs_to_completion(server, object_info, path):
    prompt = speed_up(load_api(path, object_info))
    assert all(node["class_type"] in object_info for node in prompt.values())
    entry = server.run(prompt)
    assert comfy_host.execution_error(entry) is None, comfy_host.execution_error(entry)
    saved = [image for node_id, output in entry["outputs"].items() if prompt[node_id]["class_type"] == "SaveImage" for image in output.get("images", [])]
    expected_batch = 3 if path.stem == "idm_vton_batch" else 1
    assert len(saved) == expected_batch
    person_name = next(n["inputs"]["image"] for n in prompt.values() if n["class_type"] == "LoadImage" and "person" in n["inputs"]["image"])
    person = np.asarray(Image.open(REPO / "samples" / person_name).convert("RGB"))
    for image in saved:
        result = np.asarray(
            Image.open(io.BytesIO(server.get_bytes(f"/view?filename={image['filename']}&subfolder={image['subfolder']}&type=output"))).convert("RGB")
        )
        assert result.shape == person.shape  # pasted back into the original photo
        unchanged = (result == person).all(axis=-1)
        assert 0.2 < unchanged.mean() < 1.0  # the try-on changed the garment area and kept the rest


def test_the_template_browser_lists_the_workflows(server):
    templates = server.get_json("/workflow_templates")
    assert sorted(templates.get("comfyui-tryon", [])) == sorted(p.stem for p in WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_committed_workflow_equals_what_the_builder_writes_from_the_current_nodes(object_info, path):
    import build_workflows

    built = build_workflows.BUILDERS[path.stem](object_info).to_json()
    assert built == json.loads(path.read_text()), f"{path.name} is stale: run .venv/bin/python tools/build_workflows.py"
