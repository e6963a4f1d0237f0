"""The reliability matrix's server: the tiny fixtures plus bad model files, a second tiny vision model and test-only nodes.

One ComfyUI server is shared by tests/test_reliability_*.py (started on first use, stopped at the end of the session).
Its models tree adds, next to the normal fixtures (from the `fixture_models` fixture):
- models/idm_vton/reliability/: empty, truncated, random-bytes and malicious-pickle files, a tiny SD1.5-shaped UNet,
  an SDXL checkpoint (single-file format) and a file that vanished after it was listed (a dangling link);
- models/clip_vision/tiny_clip_vision_w48.safetensors: a vision model of the wrong width (stands in for CLIP-L);
- damaged weight files of every loader (a tensor missing, of the wrong shape, integer, NaN or infinite values) under
  models/<folder>/reliability/ (DAMAGED), and the fixture TryonNet under two more names (TRYON_COPIES);
- custom_nodes/tryon_reliability_nodes.py: loads tests/reliability_nodes.py.
"""

from __future__ import annotations

import io
import json
import pathlib
import pickle
import shutil
import time

import comfy_host
import numpy as np
import safetensors.torch
import torch
from graphs import tryon_graph
from PIL import Image

BAD = "reliability"  # sub-folder of models/idm_vton holding the bad files
WRONG_VISION = "tiny_clip_vision_w48.safetensors"
WIDTH, HEIGHT = 64, 80  # small (the VAE dominates the run time), not square (catches swapped sides)


class MarkerPayload:
    """Unpickling this object runs code: it creates the marker file (what a malicious checkpoint would do)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def malicious_pickle_bytes(marker: pathlib.Path) -> bytes:
    """A plain (non-zip) pickle that would create `marker` if unpickled without the weights-only restriction."""
    return pickle.dumps({"conv_in.weight": MarkerPayload(marker)}, protocol=2)


def write_malicious_zip(path: pathlib.Path, marker: pathlib.Path) -> None:
    """A torch.save zip archive whose data.pkl creates `marker` when unpickled without weights_only."""
    torch.save({"conv_in.weight": MarkerPayload(marker)}, path)


def write_sd15_unet(path: pathlib.Path) -> None:
    """A tiny diffusers UNet with SD1.5's shape: 4 levels, conv proj_in, no text-time add embedding."""
    from diffusers import UNet2DConditionModel
    from tiny_models import _randomize

    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(64, 128, 128, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=48,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    _randomize(unet, torch.Generator().manual_seed(11))
    safetensors.torch.save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(path))


def write_wrong_vision(path: pathlib.Path) -> None:
    """A CLIP vision model with the real key names but width 48 (IDM-VTON's IP-Adapter needs the fixture's 64)."""
    from reliability_nodes import OTHER_VISION_LAYERS, OTHER_VISION_WIDTH
    from tiny_models import _randomize
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=OTHER_VISION_WIDTH,
        intermediate_size=96,
        num_hidden_layers=OTHER_VISION_LAYERS,
        num_attention_heads=2,
        image_size=224,
        patch_size=14,
        projection_dim=32,
        hidden_act="gelu",
    )
    model = CLIPVisionModelWithProjection(config)
    _randomize(model, torch.Generator().manual_seed(12))
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    safetensors.torch.save_file(sd, str(path))


def write_bad_models(root: pathlib.Path, fixture_models_dir: pathlib.Path) -> pathlib.Path:
    """The extra models tree and custom node folder; returns the extra_model_paths.yaml naming them."""
    models = root / "models"
    bad = models / "idm_vton" / BAD
    bad.mkdir(parents=True, exist_ok=True)
    markers = root / "markers"
    markers.mkdir(exist_ok=True)
    repo = fixture_models_dir / "idm_vton" / "IDM-VTON-tiny-fast"
    tryon_bytes = (repo / "unet" / "diffusion_pytorch_model.bin").read_bytes()
    garment_bytes = (repo / "unet_encoder" / "diffusion_pytorch_model.safetensors").read_bytes()
    rng = np.random.default_rng(7)
    (bad / "empty.safetensors").write_bytes(b"")
    (bad / "empty.bin").write_bytes(b"")
    (bad / "truncated.safetensors").write_bytes(garment_bytes[: len(garment_bytes) // 2])
    (bad / "truncated.bin").write_bytes(tryon_bytes[: len(tryon_bytes) // 2])
    (bad / "random_bytes.safetensors").write_bytes(rng.bytes(65536))
    (bad / "random_bytes.bin").write_bytes(rng.bytes(65536))
    (bad / "malicious_pickle.bin").write_bytes(malicious_pickle_bytes(markers / "malicious_pickle.created"))
    write_malicious_zip(bad / "malicious_zip.bin", markers / "malicious_zip.created")
    write_sd15_unet(bad / "sd15_unet.safetensors")
    checkpoint = bad / "sdxl_checkpoint.safetensors"
    if not checkpoint.is_symlink():
        checkpoint.symlink_to(fixture_models_dir / "checkpoints" / "tiny_sdxl_fast.safetensors")
    vanished = bad / "vanished.safetensors"
    if not vanished.is_symlink():
        vanished.symlink_to(bad / "deleted_after_listing.safetensors")  # listed by ComfyUI, gone when loaded
    (models / "clip_vision").mkdir(parents=True, exist_ok=True)
    write_wrong_vision(models / "clip_vision" / WRONG_VISION)
    write_damaged_models(models, fixture_models_dir)
    custom_nodes = root / "custom_nodes"
    custom_nodes.mkdir(exist_ok=True)
    (custom_nodes / "tryon_reliability_nodes.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(comfy_host.TESTS_DIR)!r})\n"
        "from reliability_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402,F401\n"
    )
    yaml = root / "extra_model_paths.yaml"
    yaml.write_text(
        f"tryon_reliability:\n    base_path: {models}\n"
        + "".join(f"    {folder}: {folder}\n" for folder in ("idm_vton", "clip_vision", *DAMAGED_FOLDERS))
        + f"tryon_reliability_nodes:\n    custom_nodes: {custom_nodes}\n"
    )
    return yaml


# ----------------------------------------------------------------------------------------------
# Damaged weight files (issue 17, class 1): each loader's fixture with a tensor missing, of the wrong shape, of an
# integer dtype or NaN, under <folder>/reliability/ of the reliability server's own models tree
# ----------------------------------------------------------------------------------------------
DAMAGED_FOLDERS = ("openpose", "densepose", "humanparsing", "garment_caption", "diffusion_models")
# the name the loader lists (its folder's sub-path) -> what is wrong with it
DAMAGED = {
    "idm_vton": {
        "tryon_missing_tensor.safetensors": "one UNet tensor missing",
        "tryon_missing_ip.safetensors": "one IP-Adapter tensor missing",
        "tryon_wrong_shape.safetensors": "one tensor of the wrong shape",
        "tryon_integers.safetensors": "every tensor int32",
        "tryon_nan.safetensors": "every tensor NaN",
        "tryon_one_inf.safetensors": "one value infinite",
        "garment_missing_tensor.safetensors": "one UNet tensor missing",
        "garment_nan.safetensors": "every tensor NaN",
    },
    "openpose": {"missing_tensor.pth": "one tensor missing", "wrong_shape.pth": "one tensor of the wrong shape", "nan.pth": "one value NaN"},
    "densepose": {"nan.torchscript": "a NaN parameter", "integer.torchscript": "an int64 parameter"},
    "humanparsing": {"parsing_atr_nan.onnx": "NaN weights (ONNX keeps them inside the graph)"},
    "garment_caption": {"missing_tensor": "one tensor missing", "nan": "every tensor NaN"},
    "diffusion_models": {"ootd_garm_missing_tensor.safetensors": "one UNet tensor missing", "ootd_garm_nan.safetensors": "every tensor NaN"},
}
# the fixture TryonNet under two more names: each name used for the first time is a fresh load of the same weights
TRYON_COPIES = (f"{BAD}/tryon_same_file_again.bin", f"{BAD}/tryon_same_file_once_more.bin")


def damaged(folder: str, name: str) -> str:
    """The name a loader lists for the damaged file `name` of `folder` (caption models: the folder name)."""
    return f"reliability-{name}" if folder == "garment_caption" else f"{BAD}/{name}"


def write_damaged_models(models: pathlib.Path, fixture_models_dir: pathlib.Path) -> None:
    """Writes every file of DAMAGED from the fixtures (see there)."""
    import fixtures_densepose
    import fixtures_ootd
    import fixtures_openpose
    import fixtures_parsing

    def save(folder: str, name: str, state: dict) -> None:
        path = models / folder / BAD / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".safetensors"):
            safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        else:
            torch.save(state, path)

    repo = fixture_models_dir / "idm_vton" / "IDM-VTON-tiny-fast"
    tryon = torch.load(repo / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
    garment = safetensors.torch.load_file(str(repo / "unet_encoder" / "diffusion_pytorch_model.safetensors"))
    attn1 = next(k for k in tryon if k.endswith("attn1.to_q.weight"))
    save("idm_vton", "tryon_missing_tensor.safetensors", {k: v for k, v in tryon.items() if k != attn1})
    ip_key = next(k for k in tryon if k.endswith("to_k_ip.weight"))
    save("idm_vton", "tryon_missing_ip.safetensors", {k: v for k, v in tryon.items() if k != ip_key})
    save("idm_vton", "tryon_wrong_shape.safetensors", {**tryon, attn1: torch.zeros(tryon[attn1].shape[0], tryon[attn1].shape[1] + 8)})
    save("idm_vton", "tryon_integers.safetensors", {k: (v * 1000).to(torch.int32) for k, v in tryon.items()})
    save("idm_vton", "tryon_nan.safetensors", {k: torch.full_like(v, float("nan")) for k, v in tryon.items()})
    one_inf = tryon["conv_out.weight"].clone()
    one_inf.view(-1)[0] = float("inf")
    save("idm_vton", "tryon_one_inf.safetensors", {**tryon, "conv_out.weight": one_inf})
    garment_key = next(k for k in garment if k.endswith("attn2.to_v.weight"))
    save("idm_vton", "garment_missing_tensor.safetensors", {k: v for k, v in garment.items() if k != garment_key})
    save("idm_vton", "garment_nan.safetensors", {k: torch.full_like(v, float("nan")) for k, v in garment.items()})
    for name in TRYON_COPIES:
        copy = models / "idm_vton" / name
        if not copy.is_symlink():
            copy.symlink_to(repo / "unet" / "diffusion_pytorch_model.bin")

    pose = fixtures_openpose.fixture_state_dict()
    save("openpose", "missing_tensor.pth", {k: v for k, v in pose.items() if k != "Mconv4_stage3_L2.weight"})
    save("openpose", "wrong_shape.pth", {**pose, "conv3_2.weight": torch.zeros(pose["conv3_2.weight"].shape[0], 5, 3, 3)})
    nan_pose = {k: v.clone() for k, v in pose.items()}
    nan_pose["Mconv2_stage5_L1.weight"].view(-1)[7] = float("nan")
    save("openpose", "nan.pth", nan_pose)

    for name, anchor in (("nan.torchscript", torch.full((4,), float("nan"))), ("integer.torchscript", torch.zeros(4, dtype=torch.int64))):
        module = fixtures_densepose.TupleDensePose()
        module.anchor = torch.nn.Parameter(anchor, requires_grad=False)
        fixtures_densepose.save_scripted(module, models / "densepose" / BAD / name)

    parser = fixtures_parsing.build_colour_parser("atr")
    with torch.no_grad():
        parser.score.weight.fill_(float("nan"))
    (models / "humanparsing" / BAD).mkdir(parents=True, exist_ok=True)
    (models / "humanparsing" / BAD / "parsing_atr_nan.onnx").write_bytes(fixtures_parsing.export_onnx("atr", parser))

    source = fixture_models_dir / "garment_caption" / "tiny-clip"
    weights = safetensors.torch.load_file(str(source / "model.safetensors"))
    dropped = next(k for k in weights if k.endswith("mlp.fc1.weight"))
    variants = {"missing_tensor": {k: v for k, v in weights.items() if k != dropped}, "nan": {k: torch.full_like(v, float("nan")) for k, v in weights.items()}}
    for name, state in variants.items():
        folder = models / "garment_caption" / damaged("garment_caption", name)
        folder.mkdir(parents=True, exist_ok=True)
        for file in source.iterdir():
            if file.name != "model.safetensors":
                shutil.copy(file, folder / file.name)
        safetensors.torch.save_file(state, str(folder / "model.safetensors"))

    ootd = {k: v.contiguous() for k, v in fixtures_ootd.build_unet(4, 45).state_dict().items()}
    ootd_key = next(k for k in ootd if k.endswith("attn1.to_k.weight"))
    save("diffusion_models", "ootd_garm_missing_tensor.safetensors", {k: v for k, v in ootd.items() if k != ootd_key})
    save("diffusion_models", "ootd_garm_nan.safetensors", {k: torch.full_like(v, float("nan")) for k, v in ootd.items()})


def start_server(root: pathlib.Path, fixture_models: pathlib.Path) -> comfy_host.ComfyServer:
    """The reliability server: the fixture models plus the bad files and the test-only nodes (the `host` fixture)."""
    extra = write_bad_models(root, fixture_models.parent / "models")
    host = comfy_host.ComfyServer(root / "server", fixture_models, extra_args=("--extra-model-paths-config", str(extra)))
    host.wait_ready()
    host.markers = root / "markers"
    write_images(host.workdir / "input")
    return host


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
def png(folder: pathlib.Path, name: str, array: np.ndarray) -> str:
    Image.fromarray(array).save(folder / name)
    return name


def write_images(folder: pathlib.Path) -> None:
    """Person, garment, mask and DensePose at the base size, plus the odd sizes the matrix uses."""
    from sample_images import write_tryon_inputs

    write_tryon_inputs(folder, WIDTH, HEIGHT, prefix="r")
    for width, height in ((32, 40), (128, 160), (80, 100), (70, 90), (64, 384), (384, 64), (16, 16), (40, 400), (4104, 64)):
        write_tryon_inputs(folder, width, height, prefix="r")
    rng = np.random.default_rng(3)
    soft = rng.uniform(0.0, 0.49, (HEIGHT, WIDTH))  # below 0.5 outside the base rectangle ...
    soft[HEIGHT // 4 : HEIGHT * 3 // 4, WIDTH // 4 : WIDTH * 3 // 4] = rng.uniform(0.51, 1.0, (HEIGHT // 2, WIDTH // 2))  # ... above inside
    png(folder, "r_soft_mask.png", np.repeat((soft * 255).round().astype(np.uint8)[..., None], 3, -1))


def base_inputs(width: int = WIDTH, height: int = HEIGHT) -> dict[str, str]:
    return {kind: f"r_{kind}_{width}x{height}.png" for kind in ("person", "garment", "mask", "densepose")}


def write_tensor(host: comfy_host.ComfyServer, name: str, tensor: torch.Tensor) -> str:
    safetensors.torch.save_file({"tensor": tensor.contiguous()}, str(host.workdir / "input" / name))
    return name


def tensor_image(name: str) -> dict:
    return {"class_type": "TryOnTestTensorImage", "inputs": {"name": name}}


def tensor_mask(name: str) -> dict:
    return {"class_type": "TryOnTestTensorMask", "inputs": {"name": name}}


def graph(seed: int = 42, steps: int = 2, **overrides) -> dict:
    """The tiny try-on graph on the base images; `overrides` replace whole nodes (None removes one)."""
    names = base_inputs()
    built = tryon_graph(names["person"], names["garment"], names["mask"], names["densepose"], seed=seed, steps=steps)
    for node_id, node in overrides.items():
        if node is None:
            built.pop(node_id, None)
        else:
            built[node_id] = node
    return built


def load_image(name: str) -> dict:
    return {"class_type": "LoadImage", "inputs": {"image": name}}


# ----------------------------------------------------------------------------------------------
# Outcomes
# ----------------------------------------------------------------------------------------------
_LAST_GOOD: dict = {}


def with_last_good(prompt: dict, keep_graph: dict | None = None) -> dict:
    """`prompt` plus the last successful graph's non-output nodes under `keep_` ids.

    ComfyUI's cache drops results of nodes that are not in the current prompt; nodes that are present but
    not needed by an output are neither run nor dropped. So a failing case does not evict the loaded models
    and prepared inputs, and the next valid prompt only re-samples (this keeps the matrix fast).
    """

    def keep(ref):
        return [f"keep_{ref[0]}", ref[1]] if isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str) else ref

    kept = {
        f"keep_{node_id}": {**node, "inputs": {k: keep(v) for k, v in node["inputs"].items()}}
        for node_id, node in (keep_graph or _LAST_GOOD).items()
        if node["class_type"] != "SaveImage"
    }
    return {**kept, **prompt}


def outcome(host: comfy_host.ComfyServer, prompt: dict, timeout: float = 300, keep_cache: bool = True, keep_graph: dict | None = None) -> tuple[str, str, dict]:
    """('rejected' | 'error' | 'interrupted' | 'success', message, history entry or validation answer).

    keep_cache: keep the cached results of `keep_graph` (default: the last valid graph) while this prompt runs.
    """
    answer = host.queue(with_last_good(prompt, keep_graph) if keep_cache else prompt)
    if "prompt_id" not in answer:
        return "rejected", json.dumps(answer), answer
    entry = host.wait_history(answer["prompt_id"], timeout)
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return "error", f"{data.get('node_type')}: {data.get('exception_type')}: {data.get('exception_message')}", entry
        if kind == "execution_interrupted":
            return "interrupted", json.dumps(data), entry
    return "success", "", entry


def images(host: comfy_host.ComfyServer, entry: dict) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(data))) for data in host.output_images(entry)]


_NEXT_SEED = [1000]


def assert_recovers(host: comfy_host.ComfyServer) -> np.ndarray:
    """The server is alive and the next valid prompt (a fresh seed) succeeds with an image of the base size."""
    assert host.alive(), host.log_text()[-3000:]
    _NEXT_SEED[0] += 1
    good = graph(seed=_NEXT_SEED[0])
    status, message, entry = outcome(host, good)
    assert status == "success", message
    _LAST_GOOD.clear()
    _LAST_GOOD.update(good)
    (image,) = images(host, entry)
    assert image.shape == (HEIGHT, WIDTH, 3)
    return image


def probe(host: comfy_host.ComfyServer, keep_graph: dict | None = None) -> dict:
    """The live TryOnState report from inside the server (see reliability_nodes.TryOnTestStateProbe)."""
    status, message, entry = outcome(host, {"probe": {"class_type": "TryOnTestStateProbe", "inputs": {"token": str(time.time())}}}, keep_graph=keep_graph)
    assert status == "success", message
    return json.loads(entry["outputs"]["probe"]["text"][0])


def rss_bytes(host: comfy_host.ComfyServer) -> int:
    import psutil

    return psutil.Process(host.process.pid).memory_info().rss


def listed(host: comfy_host.ComfyServer, node: str, input_name: str) -> list[str]:
    import workflow_api

    return workflow_api.combo_options(host.get_json(f"/object_info/{node}")[node]["input"]["required"][input_name])
