"""onnxruntime for the networks that run as ONNX (human parsing): imported where needed, with a clear error when missing.

The pack does not list onnxruntime in requirements.txt. The CPU package `onnxruntime` and the CUDA package
`onnxruntime-gpu` (and the DirectML, OpenVINO, ROCm ones) all install the same `onnxruntime` module, and pip cannot
say "any one of them": a requirement on `onnxruntime` installs the CPU package over a user's `onnxruntime-gpu` and
replaces its files. So the user installs exactly one, and this module says which when none is there
(docs/preprocessing.md, "Human parsing").
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
from types import ModuleType

from ..errors import TryOnInputError

# The distributions that provide the `onnxruntime` module (one at a time).
DISTRIBUTIONS = ("onnxruntime-gpu", "onnxruntime", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-rocm", "onnxruntime-qnn")
INSTALL_HINT = (
    "Install exactly one onnxruntime package into ComfyUI's Python: `pip install onnxruntime-gpu` (NVIDIA GPU with CUDA) or "
    "`pip install onnxruntime` (CPU, any machine), then restart ComfyUI."
)

log = logging.getLogger(__name__)
_warned_about_both = False


def installed_distributions() -> list[str]:
    """The onnxruntime distributions pip has installed (normally one; more means one overwrote the other's files)."""
    found = []
    for name in DISTRIBUTIONS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def import_onnxruntime(input_name: str) -> ModuleType:
    """The `onnxruntime` module, or a TryOnInputError naming `input_name`, both packages and the fix."""
    global _warned_about_both
    try:
        module = importlib.import_module("onnxruntime")
    except ModuleNotFoundError as error:
        if error.name != "onnxruntime":
            raise _broken(input_name, error) from error
        raise TryOnInputError(
            f"{input_name}: this model runs on onnxruntime, which is not installed in ComfyUI's Python ({sys.executable}). {INSTALL_HINT}"
        ) from error
    except ImportError as error:  # a damaged install, or a GPU build whose CUDA libraries are missing
        raise _broken(input_name, error) from error
    installed = installed_distributions()
    if len(installed) > 1 and not _warned_about_both:
        _warned_about_both = True
        log.warning(
            "Try-On: %s are all installed; they share one `onnxruntime` module and the one installed last wins (often the CPU build). "
            "Keep one: `pip uninstall -y %s` and then `pip install onnxruntime-gpu` (NVIDIA) or `pip install onnxruntime` (CPU).",
            " and ".join(installed),
            " ".join(installed),
        )
    return module


def _broken(input_name: str, error: ImportError) -> TryOnInputError:
    return TryOnInputError(
        f"{input_name}: onnxruntime is installed but cannot be imported ({type(error).__name__}: {error}). "
        f"Uninstall every onnxruntime package (`pip uninstall -y {' '.join(DISTRIBUTIONS)}`), then: {INSTALL_HINT}"
    )
