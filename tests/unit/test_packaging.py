"""Registry metadata and install facts: what the Comfy registry and an artist's `pip install -r` read."""

from __future__ import annotations

import pathlib
import re

import tomllib

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_pyproject_has_complete_registry_metadata():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["project"]["version"])
    icon = comfy["Icon"]
    assert icon.startswith("https://") and icon.endswith("/main/web/icon.png")
    assert (REPO / "web" / "icon.png").stat().st_size > 0


def test_runtime_requirements_are_unpinned_and_without_diffusers():
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    packages = [line for line in lines if line]
    assert packages == ["opencv-python-headless", "onnxruntime", "safetensors"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == packages


def test_workflows_are_in_a_folder_the_template_browser_reads():
    assert sorted(p.name for p in (REPO / "workflows").glob("*.json")) == [
        "idm_vton_batch.json",
        "idm_vton_dresscode.json",
        "idm_vton_manual_mask.json",
        "idm_vton_upper_body.json",
    ]
