"""The networks the pack loads by file name (parsing, OpenPose, DensePose, caption), held as ComfyUI ModelPatchers.

One patcher per file version: the key is the network kind plus the identity (real path, size, mtime) of its main file
and of any other file it is built from, so a replaced file is a new entry and the old one is dropped. ComfyUI manages
each patcher like any model it loads (`load_models_gpu` before a run moves it to ComfyUI's device and counts its
memory). An entry lives as long as ComfyUI keeps the model loaded: when ComfyUI unloads it (another model needs the
memory, "Unload models", "Free model and node cache"), the patcher's detach callback drops the entry here, so the
weights are freed and the next run loads the file again. Nothing else holds these networks.

ComfyUI keeps only weak references to loaded models and frees a patcher whose last reference goes away while it walks
its list of loaded models; so the dropped patcher is kept alive by ComfyUI's own record of the unload (the
`LoadedModel` it is unloading, discarded when that walk ends), and is freed right after.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Sequence

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension

from ..model_folders import file_identity

CALLBACK_KEY = "comfyui_tryon_managed_models"
KEEPALIVE_ATTRIBUTE = "_comfyui_tryon_unloaded_patcher"

_entries: dict[tuple, comfy.model_patcher.ModelPatcher] = {}
_released: list[comfy.model_patcher.ModelPatcher] = []  # fallback keep-alive, emptied at the next call
_lock = threading.RLock()


def managed_model(
    kind: str,
    path: str,
    build: Callable[[str], comfy.model_patcher.ModelPatcher],
    *,
    other_files: Sequence[str] = (),
    force_full_load: bool = False,
) -> comfy.model_patcher.ModelPatcher:
    """The loaded patcher of `path` (built with `build(path)` when absent), loaded onto ComfyUI's device.

    `kind` names the network family ("openpose", "parsing", ...), so one file used two ways gets two entries;
    `other_files` (configs, tokenizers...) are part of the identity too.
    """
    main = file_identity(path)
    key = (kind, main[0], main, tuple(file_identity(p) for p in other_files))
    stale: list = []
    with _lock:
        _released.clear()
        patcher = _entries.get(key)
        if patcher is None:
            stale = [_entries.pop(k) for k in [k for k in _entries if k[:2] == key[:2]]]  # an older version of the same file
            patcher = build(path)
            patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_DETACH, CALLBACK_KEY, _forget_on_unload(key))
            _entries[key] = patcher
    del stale  # outside the lock: freeing an old patcher runs its detach callbacks
    comfy.model_management.load_models_gpu([patcher], force_full_load=force_full_load)
    return patcher


def _forget_on_unload(key: tuple) -> Callable:
    def forget(patcher, unpatch_all=True):
        if not unpatch_all:  # ComfyUI re-loading the same model, or the patcher being freed: not an unload
            return
        with _lock:
            if _entries.get(key) is not patcher:
                return
            del _entries[key]
            _keep_alive_until_unloaded(patcher)

    return forget


def _keep_alive_until_unloaded(patcher) -> None:
    for loaded in comfy.model_management.current_loaded_models:
        if loaded.model is patcher:
            setattr(loaded, KEEPALIVE_ATTRIBUTE, patcher)
            return
    _released.append(patcher)


def loaded_entries() -> list[tuple]:
    """The keys held now (for tests and diagnostics)."""
    with _lock:
        return list(_entries)


def forget_all() -> None:
    """Drops every entry (ComfyUI frees the memory once nothing else holds the patchers)."""
    with _lock:
        dropped = list(_entries.values())
        _entries.clear()
        _released.clear()
    del dropped


atexit.register(forget_all)  # free the patchers while ComfyUI's modules still exist (their __del__ needs them)
