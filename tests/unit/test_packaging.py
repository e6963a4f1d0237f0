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
    assert packages == ["opencv-python-headless", "safetensors"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == packages


def test_requirements_never_install_an_onnxruntime_over_another():
    text = (REPO / "requirements.txt").read_text()
    listed = [line.split("#")[0].strip() for line in text.splitlines()]
    assert not [line for line in listed if line.startswith("onnxruntime")]
    assert "onnxruntime-gpu" in text and "`onnxruntime`" in text  # the comment says to install exactly one


def test_install_script_keeps_an_installed_onnxruntime(monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("tryon_install", REPO / "install.py")
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "onnxruntime" else real_find_spec(name, *a))
    assert install.wanted_package() is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    monkeypatch.setitem(sys.modules, "torch", type(sys)("torch"))
    sys.modules["torch"].cuda = type("cuda", (), {"is_available": staticmethod(lambda: True)})
    sys.modules["torch"].version = type("version", (), {"cuda": "12.4"})
    assert install.wanted_package() == "onnxruntime-gpu"
    sys.modules["torch"].cuda = type("cuda", (), {"is_available": staticmethod(lambda: False)})
    assert install.wanted_package() == "onnxruntime"
