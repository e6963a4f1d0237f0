"""The embedded ComfyUI host for tests and `make run`: tiny model registration, fixture folders, server control.

Test infrastructure only: the pack itself never registers models or patches ComfyUI.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
COMFY_DIR = pathlib.Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI").resolve()
TESTS_DIR = REPO / "tests" / "support"  # the test helpers (importable by module name)
PACK_MODULE = "comfyui_tryon"


def put_comfy_on_path() -> None:
    for path in (str(COMFY_DIR), str(TESTS_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)
    # `python -m` puts the repo root first; our nodes/ folder must never shadow ComfyUI's nodes.py
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != REPO]
    if "utils" not in sys.modules:
        import utils.install_util  # noqa: F401  (ComfyUI's utils package, before comfy/utils.py can shadow it)


def prepare_in_process() -> None:
    """ComfyUI importable in this process, on the CPU (before comfy.model_management is imported)."""
    put_comfy_on_path()
    import comfy.cli_args

    if "comfy.model_management" not in sys.modules:
        comfy.cli_args.args.cpu = True
        comfy.cli_args.args.fp32_text_enc = True  # parity is defined in fp32 (ComfyUI's CPU default is fp16)


def import_pack():
    """The pack as the package `comfyui_tryon` (relative imports inside it resolve against ComfyUI)."""
    import importlib
    import importlib.util

    if PACK_MODULE not in sys.modules:
        put_comfy_on_path()
        spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE] = module
        spec.loader.exec_module(module)
    pack = sys.modules[PACK_MODULE]
    for sub in (
        "models.sdxl_unet",
        "models.tryon_net",
        "models.garment_net",
        "models.weights_io",
        "attention.tryon_patch",
        "pipeline.idm_vton_apply",
        "attention.reference_attention",
        "attention.ip_attention",
        "attention.garment_features",
        "attention.resampler",
        "preprocess.tryon_inputs",
    ):
        importlib.import_module(f"{PACK_MODULE}.{sub}")
    return pack


def pack_module(name: str):
    """A submodule of the pack, e.g. pack_module("preprocess.agnostic_mask")."""
    import importlib

    import_pack()
    return importlib.import_module(f"{PACK_MODULE}.{name}")


# ----------------------------------------------------------------------------------------------
# Test-only registrations of tiny model configs
# ----------------------------------------------------------------------------------------------
_REGISTERED = False


def register_tiny_models() -> None:
    """Lets ComfyUI's stock loaders accept the tiny fixtures (SDXL and SD1.5 checkpoints, UNets, CLIP vision)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import comfy.clip_vision
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models
    import comfy.supported_models_base
    from tiny_models import CLIP_G_WIDTH, CLIP_L_WIDTH, PRESETS, VISION_L_LAYERS, VISION_LAYERS, tiny_clip_vision_json, tiny_text_config

    class TinySDXLClipModel(comfy.sdxl_clip.SDXLClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            torch_module_init(self)
            self.clip_l = comfy.sd1_clip.SDClipModel(
                layer="hidden",
                layer_idx=-2,
                device=device,
                dtype=dtype,
                layer_norm_hidden_state=False,
                textmodel_json_config=tiny_text_config(CLIP_L_WIDTH),
                model_options={**model_options, "model_name": "clip_l"},
            )
            self.clip_g = comfy.sd1_clip.SDClipModel(
                layer="hidden",
                layer_idx=-2,
                device=device,
                dtype=dtype,
                textmodel_json_config=tiny_text_config(CLIP_G_WIDTH),
                special_tokens={"start": 49406, "end": 49407, "pad": 0},
                layer_norm_hidden_state=False,
                return_projected_pooled=True,
                model_options={**model_options, "model_name": "clip_g"},
            )
            self.dtypes = {dtype}

    new_models = []
    for preset in PRESETS.values():
        new_models.append(
            type(
                f"TinySDXL_{preset.name}",
                (comfy.supported_models.SDXL,),
                {
                    "unet_config": preset.comfy_unet_config(),
                    "clip_target": lambda self, state_dict={}: comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClipModel),
                },
            )
        )
    comfy.supported_models.models[:0] = new_models

    stock_loader = comfy.clip_vision.load_clipvision_from_sd
    temp = pathlib.Path(os.environ.get("TMPDIR", "/tmp"))
    configs = {  # depth -> config: the ViT-H-shaped (gelu) and the ViT-L-shaped (quick_gelu) tiny encoders
        VISION_LAYERS: tiny_clip_vision_json(temp / f"tiny_clip_vision_{os.getpid()}.json"),
        VISION_L_LAYERS: tiny_clip_vision_json(temp / f"tiny_clip_vision_l_{os.getpid()}.json", "quick_gelu", VISION_L_LAYERS),
    }

    def load_clipvision_from_sd(sd, prefix="", convert_keys=False):
        for layers, config_path in configs.items():
            last = f"vision_model.encoder.layers.{layers - 1}.layer_norm1.weight"
            beyond = f"vision_model.encoder.layers.{layers}.layer_norm1.weight"
            if last in sd and beyond not in sd:
                clip = comfy.clip_vision.ClipVisionModel(str(config_path))
                clip.load_sd(sd)
                return clip
        return stock_loader(sd, prefix, convert_keys)

    comfy.clip_vision.load_clipvision_from_sd = load_clipvision_from_sd
    import fixtures_ootd

    fixtures_ootd.register_tiny_models()  # the OOTDiffusion fixtures' tiny SD1.5 sizes (checkpoint, single-file UNets)
    _REGISTERED = True


def torch_module_init(module) -> None:
    import torch

    torch.nn.Module.__init__(module)


# ----------------------------------------------------------------------------------------------
# Fixture model folders
# ----------------------------------------------------------------------------------------------
def write_single_file_checkpoint(
    path: pathlib.Path, model_config, unet_config: dict, diffusers_sd: dict, clip_seed: int, vae_sample_size: int, vae_scaling: float
) -> None:
    """A checkpoint in ComfyUI's single-file format: the diffusers UNet `diffusers_sd` under model.diffusion_model
    (renamed through `unet_config`), `model_config`'s text encoder(s) randomised from `clip_seed`, and a full-size
    random VAE (fp16) under first_stage_model."""
    import comfy.diffusers_convert
    import comfy.utils
    import safetensors.torch
    import torch
    from diffusers import AutoencoderKL
    from tiny_models import _randomize

    key_map = comfy.utils.unet_to_diffusers(unet_config)
    checkpoint = {"model.diffusion_model." + key_map[k]: v for k, v in diffusers_sd.items() if k in key_map}
    clip = model_config.clip_target().clip(dtype=torch.float32)
    _randomize(clip, torch.Generator().manual_seed(clip_seed))
    clip_sd = {k: v for k, v in clip.state_dict().items() if "position_ids" not in k}
    checkpoint.update(model_config.process_clip_state_dict_for_saving(clip_sd))
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=4,
        sample_size=vae_sample_size,
        scaling_factor=vae_scaling,
    )
    vae_sd = comfy.diffusers_convert.convert_vae_state_dict(vae.state_dict())
    checkpoint.update({"first_stage_model." + k: v.half() for k, v in vae_sd.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))


def write_tiny_sdxl_checkpoint(path: pathlib.Path, preset_name: str, garment_unet) -> None:
    """A tiny SDXL checkpoint in the single-file format (model.diffusion_model / conditioner / first_stage_model)."""
    import comfy.supported_models

    register_tiny_models()
    config_class = next(m for m in comfy.supported_models.models if m.__name__ == f"TinySDXL_{preset_name}")
    model_config = config_class(config_class.unet_config)
    unet_config_from_diffusers = import_pack().models.sdxl_unet.unet_config_from_diffusers
    diffusers_sd = garment_unet.state_dict()
    unet_config = unet_config_from_diffusers(diffusers_sd, "fixture")
    write_single_file_checkpoint(path, model_config, unet_config, diffusers_sd, clip_seed=5, vae_sample_size=1024, vae_scaling=0.13025)


def write_fixture_models(root: pathlib.Path, presets: tuple[str, ...] = ("fast",)) -> pathlib.Path:
    """A ComfyUI models tree with every tiny fixture, plus an extra_model_paths.yaml naming it."""
    import shutil

    from tiny_models import PRESETS, build_garment_unet, write_idm_layout

    prepare_in_process()

    models = root / "models"
    for name in presets:
        preset = PRESETS[name]
        repo = write_idm_layout(models / "idm_vton", preset)
        checkpoint = models / "checkpoints" / f"tiny_sdxl_{name}.safetensors"
        if not checkpoint.exists():
            write_tiny_sdxl_checkpoint(checkpoint, name, build_garment_unet(preset))
        vision = models / "clip_vision" / "tiny_clip_vision.safetensors"
        if not vision.exists():
            vision.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(repo / "image_encoder" / "model.safetensors", vision)
    import fixtures_caption
    import fixtures_densepose
    import fixtures_ootd
    import fixtures_openpose
    import fixtures_parsing

    for family in (fixtures_parsing, fixtures_openpose, fixtures_densepose, fixtures_caption, fixtures_ootd):
        family.write(models)  # each writes its tiny models under models/<its folder>/, skipping existing files
    add_real_name_aliases(models)
    yaml = root / "extra_model_paths.yaml"
    folders = ("checkpoints", "clip_vision", "idm_vton", "loras", "humanparsing", "openpose", "densepose", "garment_caption", "diffusion_models")
    # is_default: the fixture folders come first, so files the pack writes (a customised LoRA) land in the fixture tree
    yaml.write_text("tryon_fixtures:\n    base_path: " + str(models) + "\n    is_default: true\n" + "".join(f"    {f}: {f}\n" for f in folders))
    return yaml


# The file names the example workflows use (the real checkpoints' names) -> the tiny fixture standing in for them.
REAL_NAME_ALIASES = {
    "checkpoints/sd_xl_base_1.0.safetensors": "checkpoints/tiny_sdxl_fast.safetensors",
    "clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors": "clip_vision/tiny_clip_vision.safetensors",
    "idm_vton/IDM-VTON": "idm_vton/IDM-VTON-tiny-fast",
    "idm_vton/IDM-VTON-DC": "idm_vton/IDM-VTON-tiny-fast",
    "garment_caption/clip-vit-large-patch14": "garment_caption/tiny-clip",
}


def add_real_name_aliases(models: pathlib.Path, aliases: dict[str, str] = REAL_NAME_ALIASES) -> None:
    """Symlinks under the real file names, so the shipped workflows run unchanged on the tiny fixtures."""
    for alias, target in aliases.items():
        link, source = models / alias, models / target
        if link.is_symlink() and source.exists() and link.resolve() != source.resolve():
            link.unlink()  # a cache from before the alias changed
        if source.exists() and not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source.resolve(), target_is_directory=source.is_dir())


# ----------------------------------------------------------------------------------------------
# Server control
# ----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """A real ComfyUI server process with this pack in custom_nodes/, on a loopback port."""

    def __init__(self, workdir: pathlib.Path, extra_model_paths: pathlib.Path | None, tiny: bool = True, extra_args: tuple[str, ...] = ()):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "comfyui.log"
        for folder in ("input", "output", "temp", "user"):
            (workdir / folder).mkdir(parents=True, exist_ok=True)
        launcher = [sys.executable, str(TESTS_DIR / "comfy_launcher.py")] if tiny else [sys.executable, "main.py"]
        args = launcher + [
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--input-directory",
            str(workdir / "input"),
            "--output-directory",
            str(workdir / "output"),
            "--temp-directory",
            str(workdir / "temp"),
            "--user-directory",
            str(workdir / "user"),
            "--database-url",
            f"sqlite:///{workdir / 'user' / 'comfyui.db'}",
            *extra_args,
        ]
        if extra_model_paths is not None:
            args += ["--extra-model-paths-config", str(extra_model_paths)]
        self.log = open(self.log_path, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(args, cwd=COMFY_DIR, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            try:
                self.get_json("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer in {timeout}s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.read()

    def post_json(self, path: str, payload) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return {"http_error": error.code, **json.loads(error.read() or b"{}")}

    def queue(self, prompt: dict) -> dict:
        return self.post_json("/prompt", {"prompt": prompt, "client_id": "tests"})

    def wait_history(self, prompt_id: str, timeout: float = 600) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (entry["status"].get("status_str") in ("success", "error")):
                return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_text()[-4000:]}")
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        """Queues an API-format prompt and returns its history entry (raises if it was rejected)."""
        answer = self.queue(prompt)
        if "prompt_id" not in answer:
            raise PromptRejected(answer)
        return self.wait_history(answer["prompt_id"], timeout)

    def output_images(self, entry: dict) -> list[bytes]:
        images = []
        for node_output in entry.get("outputs", {}).values():
            for image in node_output.get("images", []):
                query = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]})
                images.append(self.get_bytes(f"/view?{query}"))
        return images

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


class PromptRejected(Exception):
    """ComfyUI refused the prompt at validation (the error body is the argument)."""


def execution_error(entry: dict) -> str | None:
    """The exception message of a failed prompt's history entry, or None when it succeeded."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message')}"
    return None
