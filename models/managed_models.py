"""The networks the pack loads by file name (parsing, OpenPose, DensePose, caption), held as ComfyUI ModelPatchers.

One patcher per file version (path, size, mtime): a replaced file is a new entry and the old one is dropped. ComfyUI
manages each patcher like any model it loads (`load_models_gpu` before a run moves it to ComfyUI's device and counts
its memory). An entry lives exactly as long as ComfyUI keeps the model loaded: when ComfyUI unloads it (another model
needs the memory, "Unload models", "Free model and node cache"), the patcher's detach callback drops the entry here,
so nothing of it survives in RAM or VRAM, and the next run loads the file again. Nothing else holds these networks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension

CALLBACK_KEY = "comfyui_tryon_managed_models"

_entries: dict[tuple, comfy.model_patcher.ModelPatcher] = {}
_lock = threading.Lock()


def file_identity(path: str) -> tuple[str, int, int]:
    """(real path, size, mtime_ns): a file replaced under the same name gets another identity."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    return real, stat.st_size, stat.st_mtime_ns


def managed_model(kind: str, path: str, build: Callable[[str], comfy.model_patcher.ModelPatcher]) -> comfy.model_patcher.ModelPatcher:
    """The loaded patcher of `path` (built with `build(path)` when absent), loaded onto ComfyUI's device.

    `kind` names the network family ("openpose", "parsing", ...), so one file used two ways gets two entries.
    """
    identity = file_identity(path)
    key = (kind, *identity)
    with _lock:
        patcher = _entries.get(key)
        if patcher is None:
            for stale in [k for k in _entries if k[:2] == key[:2]]:  # an older version of the same file
                del _entries[stale]
            patcher = build(path)
            patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_DETACH, CALLBACK_KEY, _forget_on_detach(key))
            _entries[key] = patcher
    comfy.model_management.load_models_gpu([patcher])
    return patcher


def _forget_on_detach(key: tuple) -> Callable:
    def forget(patcher, unpatch_all=True):
        with _lock:
            if _entries.get(key) is patcher:
                del _entries[key]

    return forget


def loaded_entries() -> list[tuple]:
    """The keys held now (for tests and diagnostics)."""
    with _lock:
        return list(_entries)


def forget_all() -> None:
    """Drops every entry (ComfyUI frees the memory once nothing else holds the patchers)."""
    with _lock:
        _entries.clear()
