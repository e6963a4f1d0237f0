"""`make run`'s workflow choice: the default, any shipped workflow by name, and a clear error for anything else."""

from __future__ import annotations

import pathlib
import subprocess

import pytest
import run_example

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_workflow_names_resolve_to_the_shipped_files():
    assert run_example.workflow_path(run_example.DEFAULT_WORKFLOW) == REPO / "workflows" / "idm_vton_upper_body.json"
    for path in (REPO / "workflows").glob("*.json"):
        assert run_example.workflow_path(path.stem) == path
        assert run_example.workflow_path(path.name) == path


@pytest.mark.parametrize("name", ["nope", "../README", "/etc/passwd", ".json"])
def test_other_names_are_refused_with_the_shipped_list(name):
    with pytest.raises(SystemExit) as caught:
        run_example.workflow_path(name)
    message = str(caught.value)
    assert message.startswith("WORKFLOW=") and "ootd_dc" in message and "idm_vton_upper_body" in message


def test_make_run_passes_the_workflow_variable():
    dry_run = subprocess.run(["make", "-n", "run", "WORKFLOW=ootd_dc"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "tools/run_example.py ootd_dc" in dry_run


def test_missing_models_are_found_in_classic_and_v3_combo_inputs():
    object_info = {
        "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["present.safetensors"], {}]}}},
        "OOTDiffusionUNetLoader": {
            "input": {"required": {"unet_name": ["COMBO", {"options": ["ootd/unet_garm.safetensors"]}], "weight_dtype": ["COMBO", {"options": ["default"]}]}}
        },
        "TryOnAgnosticMask": {"input": {"required": {"lip_model": ["COMBO", {"options": ["none"]}], "category": ["COMBO", {"options": ["upper_body"]}]}}},
        "LoadImage": {"input": {"required": {"image": [["other.png"], {}]}}},
    }
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "present.safetensors"}},
        "2": {"class_type": "OOTDiffusionUNetLoader", "inputs": {"unet_name": "ootd/unet_vton.safetensors", "weight_dtype": "default"}},
        "3": {"class_type": "OOTDiffusionUNetLoader", "inputs": {"unet_name": "ootd/unet_garm.safetensors", "weight_dtype": "default"}},
        "4": {"class_type": "TryOnAgnosticMask", "inputs": {"lip_model": "none", "category": "upper_body"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "person.png"}},
    }
    assert run_example.missing_models(prompt, object_info) == ["OOTDiffusionUNetLoader.unet_name = ootd/unet_vton.safetensors"]


def test_smoke_runs_of_slow_workflows_are_sized_down_and_the_default_is_not():
    import json

    import workflow_api

    def prompt_of(stem: str) -> dict:
        """The API prompt's class types and sized inputs, without /object_info: only the node types matter here."""
        nodes = json.loads((REPO / "workflows" / f"{stem}.json").read_text())["nodes"]
        return {str(n["id"]): {"class_type": n["type"], "inputs": {"width": 768, "height": 1024}} for n in nodes if n["type"] not in workflow_api.FRONTEND_ONLY}

    default = prompt_of("idm_vton_upper_body")
    assert not run_example.smoke_sized(default)
    assert all(node["inputs"]["width"] == 768 for node in default.values())
    for stem in ("ootd_hd_upper_body", "ootd_dc", "idm_vton_customise"):
        prompt = prompt_of(stem)
        assert run_example.smoke_sized(prompt), stem
        sized = [node for node in prompt.values() if node["class_type"] in run_example.SIZED_NODES]
        assert sized and all(node["inputs"] == {"width": 384, "height": 512} for node in sized)
