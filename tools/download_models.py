"""Optional: download the IDM-VTON model files into ComfyUI's model folders (needs `huggingface_hub` and internet).

    python tools/download_models.py [--models-dir ComfyUI/models] [--include GROUP,...] [--dry-run]

Default groups: tryon, clip_vision, parsing, openpose, densepose, caption (CLIP ViT-L/14 for the caption node).
Optional: garment (IDM's unet_encoder; an SDXL base
checkpoint does the same job), dresscode (IDM-VTON-DC), sdxl (SDXL base 1.0). Files already in place are skipped.
Each file is fetched into a hidden staging folder inside the models folder and moved into place when complete.

IDM-VTON's code and weights are CC BY-NC-SA 4.0: non-commercial use only. The CMU OpenPose body model is licensed for
non-commercial research only. Check every licence before you use the results.

Exit codes: 0 done (or dry run), 1 a download failed (offline, not found, disk), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import socket
import sys
import urllib.parse
from dataclasses import dataclass

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
STAGING = ".tryon_download_staging"


@dataclass(frozen=True)
class ModelFile:
    """One file to fetch: where it lives on the Hub, where it goes under ComfyUI/models, what it is."""

    group: str
    repo_id: str
    repo_type: str  # "model" or "space"
    path_in_repo: str
    target: str  # relative to ComfyUI/models
    size: str
    licence: str


IDM = "yisol/IDM-VTON"
NC = "CC BY-NC-SA 4.0 (non-commercial)"
FILES = (
    ModelFile("tryon", IDM, "model", "unet/config.json", "idm_vton/IDM-VTON/unet/config.json", "2 kB", NC),
    ModelFile("tryon", IDM, "model", "unet/diffusion_pytorch_model.bin", "idm_vton/IDM-VTON/unet/diffusion_pytorch_model.bin", "12 GB", NC),
    ModelFile("garment", IDM, "model", "unet_encoder/config.json", "idm_vton/IDM-VTON/unet_encoder/config.json", "2 kB", NC),
    ModelFile(
        "garment",
        IDM,
        "model",
        "unet_encoder/diffusion_pytorch_model.safetensors",
        "idm_vton/IDM-VTON/unet_encoder/diffusion_pytorch_model.safetensors",
        "10.3 GB",
        NC,
    ),
    ModelFile("dresscode", "yisol/IDM-VTON-DC", "model", "unet/config.json", "idm_vton/IDM-VTON-DC/unet/config.json", "2 kB", NC),
    ModelFile(
        "dresscode", "yisol/IDM-VTON-DC", "model", "unet/diffusion_pytorch_model.bin", "idm_vton/IDM-VTON-DC/unet/diffusion_pytorch_model.bin", "12 GB", NC
    ),
    ModelFile(
        "clip_vision",
        "h94/IP-Adapter",
        "model",
        "models/image_encoder/model.safetensors",
        "clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
        "2.53 GB",
        "Apache-2.0 (OpenCLIP ViT-H/14: MIT)",
    ),
    ModelFile("parsing", IDM, "space", "ckpt/humanparsing/parsing_atr.onnx", "humanparsing/parsing_atr.onnx", "267 MB", NC),
    ModelFile("parsing", IDM, "space", "ckpt/humanparsing/parsing_lip.onnx", "humanparsing/parsing_lip.onnx", "267 MB", NC),
    ModelFile(
        "openpose", IDM, "space", "ckpt/openpose/ckpts/body_pose_model.pth", "openpose/body_pose_model.pth", "209 MB", "CMU OpenPose licence (non-commercial)"
    ),
    ModelFile(
        "densepose",
        "LayerNorm/DensePose-TorchScript-with-hint-image",
        "model",
        "densepose_r50_fpn_dl.torchscript",
        "densepose/densepose_r50_fpn_dl.torchscript",
        "265 MB",
        "Apache-2.0",
    ),
    *(
        ModelFile("caption", "openai/clip-vit-large-patch14", "model", name, f"garment_caption/clip-vit-large-patch14/{name}", size, "MIT")
        for name, size in (
            ("config.json", "4 kB"),
            ("model.safetensors", "1.71 GB"),
            ("preprocessor_config.json", "1 kB"),
            ("tokenizer.json", "2 MB"),
            ("tokenizer_config.json", "1 kB"),
            ("vocab.json", "961 kB"),
            ("merges.txt", "525 kB"),
            ("special_tokens_map.json", "1 kB"),
        )
    ),
    ModelFile(
        "sdxl",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "model",
        "sd_xl_base_1.0.safetensors",
        "checkpoints/sd_xl_base_1.0.safetensors",
        "6.9 GB",
        "CreativeML Open RAIL++-M",
    ),
)
GROUPS = tuple(dict.fromkeys(f.group for f in FILES))
DEFAULT_GROUPS = ("tryon", "clip_vision", "parsing", "openpose", "densepose", "caption")


class DownloadError(Exception):
    """A download that cannot go on, with the message for the user."""


def default_models_dir() -> pathlib.Path | None:
    """ComfyUI/models when this pack sits in ComfyUI/custom_nodes/, else None."""
    candidate = REPO_ROOT.parent.parent / "models"
    return candidate if REPO_ROOT.parent.name == "custom_nodes" and candidate.is_dir() else None


def plan(groups: list[str]) -> list[ModelFile]:
    return [f for f in FILES if f.group in groups]


def print_plan(items: list[ModelFile], models_dir: pathlib.Path) -> None:
    for item in items:
        target = models_dir / item.target
        state = "have it" if target.is_file() else item.size
        print(f"  [{item.group}] {item.repo_type} {item.repo_id}: {item.path_in_repo}\n      -> {target}  ({state}; {item.licence})")


def _offline_hint() -> str:
    return "Check your internet connection (and HF_ENDPOINT / proxy settings), or download the files by hand: see the README's 'Model set-up' table."


def check_reachable(endpoint: str, timeout: float = 5.0) -> None:
    """Fails fast (one connection attempt, no retries) when the Hub endpoint cannot be reached."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # the proxy decides; huggingface_hub reports its errors
    parsed = urllib.parse.urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise DownloadError(f"cannot reach {endpoint} ({error.strerror or type(error).__name__}): you seem to be offline. {_offline_hint()}") from error


def _remove_if_empty(staging: pathlib.Path) -> None:
    """Removes a staging folder that holds no partial download (only huggingface_hub's bookkeeping)."""
    if staging.is_dir() and not any(p.is_file() and ".cache" not in p.parts for p in staging.rglob("*")):
        shutil.rmtree(staging, ignore_errors=True)
        if staging.parent.is_dir() and not any(staging.parent.iterdir()):
            staging.parent.rmdir()


def fetch(item: ModelFile, models_dir: pathlib.Path) -> pathlib.Path:
    """Downloads one file into a staging folder next to its target, then moves it into place."""
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError as error:
        raise DownloadError("huggingface_hub is not installed: pip install huggingface_hub (or download by hand).") from error
    if constants.HF_HUB_OFFLINE:
        raise DownloadError(
            "HF_HUB_OFFLINE is set, so nothing can be downloaded. Unset it, or download the files by hand: see the README's 'Model set-up' table."
        )
    check_reachable(constants.ENDPOINT)
    target = models_dir / item.target
    staging = models_dir / STAGING / item.repo_id.replace("/", "--")
    try:
        downloaded = pathlib.Path(hf_hub_download(item.repo_id, item.path_in_repo, repo_type=item.repo_type, local_dir=staging))
    except Exception as error:  # offline, unreachable endpoint, missing file, gated repo, disk full
        first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        _remove_if_empty(staging)
        raise DownloadError(f"could not download {item.path_in_repo} from {item.repo_id} ({type(error).__name__}: {first_line}). {_offline_hint()}") from error
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise DownloadError(f"{target} appeared while downloading; left as it is (the download stays in {staging}).")
    os.replace(downloaded, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Exit codes: 0 done, 1 a download failed, 2 bad arguments.")
    parser.add_argument(
        "--models-dir", type=pathlib.Path, default=None, help="ComfyUI's models folder (default: ../../models when this pack is in ComfyUI/custom_nodes)"
    )
    parser.add_argument(
        "--include", default=",".join(DEFAULT_GROUPS), help=f"comma-separated groups from {', '.join(GROUPS)} (default: {','.join(DEFAULT_GROUPS)})"
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be fetched and where, download nothing")
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.include.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        print(f"error: unknown group(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(GROUPS)}.", file=sys.stderr)
        return 2
    models_dir = args.models_dir or default_models_dir()
    if models_dir is None:
        print("error: cannot find ComfyUI/models (this pack is not in ComfyUI/custom_nodes). Pass --models-dir.", file=sys.stderr)
        return 2
    if not models_dir.is_dir():
        print(f"error: models folder does not exist: {models_dir}", file=sys.stderr)
        return 2
    items = plan(groups)
    print(f"{'would fetch' if args.dry_run else 'fetching'} into {models_dir}:")
    print_plan(items, models_dir)
    print("IDM-VTON's weights and code are CC BY-NC-SA 4.0: non-commercial use only.")
    if args.dry_run:
        return 0
    try:
        for item in items:
            target = models_dir / item.target
            if target.is_file():
                continue
            print(f"downloading {item.repo_id}: {item.path_in_repo} ({item.size})", flush=True)
            print(f"  saved {fetch(item, models_dir)}", flush=True)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished files are in place; partial ones stay in the staging folder.", file=sys.stderr)
        return 130
    staging = models_dir / STAGING
    if staging.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
    if "tryon" in groups:
        print(
            "TryonNet is a 12 GB fp32 pickle. To halve it: python tools/convert_idm_weights.py "
            f"{models_dir / 'idm_vton/IDM-VTON/unet'} {models_dir / 'idm_vton'} (then the .bin may be deleted)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
