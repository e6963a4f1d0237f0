"""The pack loads in a real ComfyUI; fixtures have the real checkpoints' layout; stock loaders accept them."""

from __future__ import annotations

import ast
import io
import json
import pathlib
import subprocess
import sys
import zipfile

import comfy_host
import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from tiny_models import PRESETS, REFERENCE_LAYOUT, build_garment_unet

OUR_NODES = set(json.loads((pathlib.Path(__file__).resolve().parents[1] / "data" / "node_api.json").read_text()))  # every node id of the pack


def reference_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = [line.split("\t") for line in (REFERENCE_LAYOUT / name).read_text().splitlines() if line.strip()]
    return [(key, tuple(json.loads(shape.replace("(", "[").replace(",)", "]").replace(")", "]")))) for key, shape in rows]


def test_server_loads_pack_and_every_input_has_a_tooltip(server):
    log = server.log_text()
    assert "IMPORT FAILED" not in "\n".join(line for line in log.splitlines() if "comfyui-tryon" in line)
    assert "comfyui-tryon" in log
    info = server.get_json("/object_info")  # which node ids and inputs exist is test_node_api's claim
    for node in OUR_NODES:
        for section in ("required", "optional"):
            for name, spec in info[node]["input"].get(section, {}).items():
                assert spec[1].get("tooltip") if len(spec) > 1 else False, f"{node}.{name} has no tooltip"


def test_layout_fixture_tryon_keys_equal_the_real_unet(layout_repo):
    state = torch.load(layout_repo / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
    real = reference_keys("unet.keys.tsv")
    assert list(state) == [key for key, _ in real]
    for key, shape in real:
        assert state[key].ndim == len(shape), key
    assert state["conv_in.weight"].shape[1] == 13
    assert sum(k.endswith("to_k_ip.weight") for k in state) == 70


def test_layout_fixture_garment_keys_equal_the_real_unet_encoder(layout_repo):
    state = safetensors.torch.load_file(layout_repo / "unet_encoder" / "diffusion_pytorch_model.safetensors")
    strays = [k for k in state if k.startswith("add_embedding.")]
    assert sorted(strays) == sorted(f"add_embedding.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias"))
    real = [key for key, _ in reference_keys("unet_encoder.keys.tsv")]
    assert [k for k in state if k not in strays] == sorted(real)  # safetensors stores keys sorted
    module_order = [k for k in build_garment_unet(PRESETS["layout"]).state_dict() if not k.startswith("add_embedding.")]
    assert module_order == real


def test_fixture_configs_and_formats_follow_the_real_repo(layout_repo):
    config = json.loads((layout_repo / "unet" / "config.json").read_text())
    assert config["in_channels"] == 13 and config["encoder_hid_dim_type"] == "ip_image_proj"
    assert {"decay", "optimization_step", "power", "inv_gamma"} <= set(config)  # EMA bookkeeping kept
    encoder_config = json.loads((layout_repo / "unet_encoder" / "config.json").read_text())
    assert "addition_embed_type" not in encoder_config and encoder_config["in_channels"] == 4
    assert zipfile.is_zipfile(layout_repo / "unet" / "diffusion_pytorch_model.bin")  # torch pickle archive
    vision = json.loads((layout_repo / "image_encoder" / "config.json").read_text())
    assert (vision["image_size"] // vision["patch_size"]) ** 2 + 1 == 257


def test_fixture_factory_is_deterministic():
    first, second = build_garment_unet(PRESETS["fast"]), build_garment_unet(PRESETS["fast"])
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_stock_loaders_accept_the_tiny_fixtures(pack):
    import nodes

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint("tiny_sdxl_fast.safetensors")[:3]
    assert model.model.diffusion_model.input_blocks[0][0].in_channels == 4
    (cond,) = nodes.CLIPTextEncode().encode(clip, "a photo of short sleeve round neck t-shirts")
    assert cond[0][0].shape == (1, 77, 64) and cond[0][1]["pooled_output"].shape == (1, 32)
    (vision,) = nodes.CLIPVisionLoader().load_clip("tiny_clip_vision.safetensors")
    states = vision.encode_image(torch.rand(1, 128, 96, 3)).penultimate_hidden_states
    assert states.shape == (1, 257, 64)
    latent = vae.encode(torch.rand(1, 64, 64, 3))
    assert latent.shape == (1, 4, 8, 8)


def test_fit_image_graph_through_the_server(server):
    image = np.zeros((50, 80, 3), np.uint8)
    image[:, :, 0] = 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    (server.workdir / "input" / "red_80x50.png").write_bytes(buffer.getvalue())
    prompt = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "red_80x50.png"}},
        "fit": {"class_type": "TryOnFitImage", "inputs": {"image": ["load", 0], "width": 96, "height": 128, "mode": "pad"}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["fit", 0], "filename_prefix": "fit"}},
    }
    entry = server.run(prompt)
    assert comfy_host.execution_error(entry) is None
    (png,) = server.output_images(entry)
    out = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert out.shape == (128, 96, 3)
    assert (out[0, 0] == 255).all()  # white padding above the image
    assert tuple(out[64, 48]) == (255, 0, 0)  # the image itself in the middle


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_fit_image_gives_the_requested_size(pack, mode):
    (out,) = pack.nodes.NODE_CLASS_MAPPINGS["TryOnFitImage"].execute(torch.rand(2, 37, 91, 4), width=64, height=80, mode=mode).result
    assert out.shape == (2, 80, 64, 3)


def test_fit_crop_keeps_the_centre(pack):
    image = torch.zeros(1, 100, 300, 3)
    image[:, :, 100:200] = 1.0  # the middle third is white
    (out,) = pack.nodes.NODE_CLASS_MAPPINGS["TryOnFitImage"].execute(image, width=64, height=64, mode="crop").result
    assert out.min() > 0.99


def test_pack_loads_in_a_comfyui_with_no_model_folder_configured():
    """A new user's ComfyUI has none of the pack's folders in extra_model_paths.yaml: the pack registers them before
    any node lists its files."""
    script = (
        "import comfy_host; comfy_host.prepare_in_process(); pack = comfy_host.import_pack(); "
        "import folder_paths; print(sorted(pack.nodes.NODE_CLASS_MAPPINGS)); print(folder_paths.get_folder_paths('idm_vton'))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=comfy_host.TESTS_DIR, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ids, folders = done.stdout.strip().splitlines()[-2:]
    assert ast.literal_eval(ids) == sorted(OUR_NODES)
    assert ast.literal_eval(folders)[0].endswith("idm_vton")
