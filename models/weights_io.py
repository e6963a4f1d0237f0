"""Reading state dicts through ComfyUI's loader, refusing pickles that would run code, with messages that name the input."""

from __future__ import annotations

import os
import pickle
import re

import comfy.utils
import torch

from ..errors import TryOnInputError

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")


def read_state_dict(path: str, input_name: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file that `model_folders.resolve` found, read by `comfy.utils.load_torch_file`.

    ComfyUI's loader applies its own options (`--disable-mmap`, `--mmap-torch-files`); pickles load with
    `weights_only=True` (`safe_load=True`), so no code in a file ever runs: a pickle that asks to run code is refused
    with a message that says so. Truncated or corrupt files, and files that are not a plain state dict of tensors,
    get a message naming `input_name` and the fix.
    """
    name = os.path.basename(path)
    if not path.lower().endswith(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES):
        raise TryOnInputError(f"{input_name}: {name} is neither .safetensors nor a torch .bin/.pth file.")
    try:
        if os.path.getsize(path) == 0:
            raise TryOnInputError(f"{input_name}: {name} is empty (0 bytes). Download it again.")
        state_dict = comfy.utils.load_torch_file(path, safe_load=True)
    except TryOnInputError:
        raise
    except pickle.UnpicklingError as error:
        raise refused_pickle_error(path, input_name, error) from error
    except Exception as error:  # missing, truncated or corrupt files end here
        raise TryOnInputError(
            f"{input_name}: cannot read {name} as model weights ({type(error).__name__}: "
            f"{first_line(error)}). The file is truncated or corrupt. Download it again, or convert it to .safetensors."
        ) from error
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TryOnInputError(f"{input_name}: {name} does not hold a plain state dict of tensors. Use the official weights file.")
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
