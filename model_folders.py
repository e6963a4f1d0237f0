"""The pack's own `folder_paths` model folders (never free paths from a workflow)."""

from __future__ import annotations

import os
from collections.abc import Callable

import folder_paths

from .errors import TryOnInputError

WEIGHT_EXTENSIONS = {".safetensors", ".bin", ".pth"}

# key -> (folder name under ComfyUI/models/, file extensions listed)
MODEL_FOLDERS = {
    "idm_vton": ("idm_vton", WEIGHT_EXTENSIONS),  # TryonNet (unet/) and GarmentNet (unet_encoder/), HF layout or single files
    "humanparsing": ("humanparsing", {".onnx"}),  # SCHP parsing_atr.onnx, parsing_lip.onnx
    "openpose": ("openpose", {".pth", ".safetensors"}),  # body_pose_model.pth (CMU OpenPose body network)
    "densepose": ("densepose", {".torchscript", ".pt", ".pth"}),  # densepose_r50_fpn_dl.torchscript, densepose_r101_fpn_dl.torchscript
    "garment_caption": ("garment_caption", {".json"}),  # Hugging Face CLIP/SigLIP model folders (listed by their config.json)
}

# HF-layout sub-folders that never hold a UNet (kept out of the UNet loaders' lists)
NON_UNET_PARTS = ("image_encoder/", "text_encoder/", "text_encoder_2/", "vae/", "tokenizer/", "tokenizer_2/")


def register_model_folders() -> None:
    for key, (folder, extensions) in MODEL_FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, folder)
        if key in folder_paths.folder_names_and_paths:
            paths, known = folder_paths.folder_names_and_paths[key]
            if path not in paths:
                paths.append(path)
            folder_paths.folder_names_and_paths[key] = (paths, set(known) | extensions)
        else:
            folder_paths.folder_names_and_paths[key] = ([path], set(extensions))


def unet_file_choices(prefer: str, folder: str = "idm_vton") -> list[str]:
    """UNet weight files in ComfyUI's `folder` list (not the VAE, text encoder... of a Hugging Face layout), the
    ones whose path mentions `prefer` (any case) first.

    Filters by extension itself: a list made before `register_model_folders` set the folder's extensions (ComfyUI
    caches it) would otherwise also hold config.json files.
    """
    names = [
        n
        for n in folder_paths.get_filename_list(folder)
        if os.path.splitext(n)[1].lower() in WEIGHT_EXTENSIONS and not any(p in n.replace(os.sep, "/") for p in NON_UNET_PARTS)
    ]
    return preferring(names, lambda name: prefer.lower() in name.replace(os.sep, "/").lower())


def preferring(names: list[str], is_preferred: Callable[[str], bool]) -> list[str]:
    """`names` sorted for a combo list: the preferred ones first (so the default is the likely file), each part by name."""
    return sorted(names, key=lambda name: (not is_preferred(name), name))


def file_identity(path: str) -> tuple[str, int, int]:
    """(real path, size, mtime_ns): a file replaced under the same name gets another identity."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    return real, stat.st_size, stat.st_mtime_ns


def files_fingerprint(*files: tuple[str, str | None], unset: str = "none") -> str:
    """A node's `fingerprint_inputs` value for its chosen (folder, name) model files: it changes when a file is replaced
    under the same name, so ComfyUI runs the node again instead of reusing its output. `unset` and missing files count
    by name (the run itself reports a missing file)."""
    parts = []
    for folder, name in files:
        try:
            parts.append(repr(file_identity(resolve(folder, name, folder))) if name and name != unset else repr(name))
        except (TryOnInputError, OSError):
            parts.append(repr(name))
    return ";".join(parts)


def resolve(folder: str, name: str, input_name: str) -> str:
    """The full path of the model file `name` listed in ComfyUI's `folder` list, checked to exist now.

    The one lookup every loader uses: names come from `folder_paths` lists (never free paths), and a file that
    was listed but has since moved or vanished gets an error that names the node input and the fix.
    """
    path = folder_paths.get_full_path(folder, name) if isinstance(name, str) and name else None
    if path is None or not os.path.isfile(path):
        raise TryOnInputError(
            f"{input_name}: '{name}' is not in ComfyUI/models/{folder} (moved, deleted, or a broken link). "
            "Put the file there and refresh the page (press R), or pick a listed file."
        )
    return path
