"""Reading state dicts from .safetensors and (safely) from pickled .bin/.pth files."""

from __future__ import annotations

import os
import pickle
import re
import zipfile

import safetensors.torch
import torch

from ..errors import TryOnInputError

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
    except pickle.UnpicklingError as error:
        raise refused_pickle_error(path, input_name, error) from error
    except Exception as error:  # corrupt or truncated files end here
        raise TryOnInputError(
            f"{input_name}: cannot read {os.path.basename(path)} as model weights ({type(error).__name__}: "
            f"{first_line(error)}). The file is truncated or corrupt. Download it again, or convert it to .safetensors."
        ) from error
    if isinstance(state_dict, dict) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TryOnInputError(f"{input_name}: {os.path.basename(path)} does not hold a plain state dict of tensors.")
    return state_dict


UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def first_line(error: BaseException, limit: int = 300) -> str:
    """The error's first non-blank line, cut to `limit` characters, for messages that quote it."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else ""


def refused_pickle_error(path: str, input_name: str, error: pickle.UnpicklingError) -> TryOnInputError:
    """The message for a pickle that `weights_only=True` refused: code it wanted to run, or plain corruption."""
    name = os.path.basename(path)
    unsafe = UNSAFE_GLOBAL.search(str(error))
    if unsafe:
        return TryOnInputError(
            f"{input_name}: {name} is a pickle that asks to run code when loaded ({unsafe.group(1)}); it was refused for "
            "safety and nothing in it ran (weights load with weights_only=True only). Use the official file, or a "
            ".safetensors version of it."
        )
    return TryOnInputError(
        f"{input_name}: cannot read {name} as model weights: it is not a valid torch pickle (truncated, corrupt, or "
        "not a weights file). Download it again, or convert it to .safetensors."
    )
