"""Reading state dicts from .safetensors and (safely) from pickled .bin/.pth files."""

from __future__ import annotations

import os
import zipfile

import safetensors.torch
import torch

from .errors import TryOnInputError

PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")


def read_state_dict(path: str, input_name: str) -> dict[str, torch.Tensor]:
    """Loads tensors only: pickles go through `weights_only=True`, so no code in a file ever runs."""
    if not os.path.isfile(path):
        raise TryOnInputError(f"{input_name}: file not found: {path}. Put the model file in the listed folder and refresh.")
    if os.path.getsize(path) == 0:
        raise TryOnInputError(f"{input_name}: {os.path.basename(path)} is empty (0 bytes). Download it again.")
    try:
        if path.endswith(".safetensors"):
            state_dict = safetensors.torch.load_file(path, device="cpu")
        elif path.endswith(PICKLE_SUFFIXES):
            mmap = zipfile.is_zipfile(path)
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        else:
            raise TryOnInputError(f"{input_name}: {os.path.basename(path)} is neither .safetensors nor a torch .bin/.pth file.")
    except TryOnInputError:
        raise
    except Exception as error:  # corrupt, truncated or unsafe files all end here
        raise TryOnInputError(
            f"{input_name}: cannot read {os.path.basename(path)} as model weights ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:300] if str(error) else ''}). The file is truncated, corrupt, or a pickle "
            "that needs code to load (refused for safety). Download it again, or convert it to .safetensors."
        ) from error
    if isinstance(state_dict, dict) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TryOnInputError(f"{input_name}: {os.path.basename(path)} does not hold a plain state dict of tensors.")
    return state_dict
