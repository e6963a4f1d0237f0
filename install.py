"""Run by ComfyUI-Manager after `pip install -r requirements.txt`: installs an onnxruntime only when none is there.

requirements.txt cannot list onnxruntime: the CPU package `onnxruntime` and the CUDA package `onnxruntime-gpu` provide the
same module, and a requirement on one installs it over the other. So this script leaves any installed onnxruntime
package alone, and otherwise installs `onnxruntime-gpu` where torch sees an NVIDIA GPU, else `onnxruntime`.
The pack itself never imports this file.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys


def wanted_package() -> str | None:
    """The onnxruntime package to install, or None when one is importable already."""
    if importlib.util.find_spec("onnxruntime") is not None:
        return None
    try:
        import torch

        cuda = torch.cuda.is_available() and torch.version.cuda is not None
    except Exception:  # no torch, or a broken one: the CPU package works everywhere
        cuda = False
    return "onnxruntime-gpu" if cuda else "onnxruntime"


def main() -> int:
    package = wanted_package()
    if package is None:
        print("[comfyui-tryon] onnxruntime is installed; nothing to do.")
        return 0
    print(f"[comfyui-tryon] installing {package} (human parsing runs on onnxruntime)")
    return subprocess.call([sys.executable, "-m", "pip", "install", package])


if __name__ == "__main__":
    sys.exit(main())
