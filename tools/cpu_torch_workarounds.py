"""Make the registry's CUDA-linked torchvision/torchaudio importable next to a CPU-only torch.

Set-up only (called by tools/setup_env.sh inside .venv); the pack never patches libraries.
- torchvision: its compiled ops fail to load, so the fake-kernel registrations for
  `torchvision::nms` / `torchvision::qnms` raise at import. They are guarded so that they
  register only when the ops exist. Transforms and models work; `nms` does not.
- torchaudio: its CUDA-linked `lib/*.so` are removed; the pure-Python parts import.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys

GUARD = "(torch.library.register_fake({op}) if torchvision.extension._has_ops() else (lambda fn: fn))"
DECORATOR = re.compile(r'^@torch\.library\.register_fake\(("torchvision::q?nms")\)\s*$', re.MULTILINE)


def site_packages_path(package: str) -> pathlib.Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return pathlib.Path(spec.origin).parent


def guard_torchvision() -> None:
    root = site_packages_path("torchvision")
    if root is None:
        return
    meta = root / "_meta_registrations.py"
    text = meta.read_text()
    patched, count = DECORATOR.subn(lambda m: "@" + GUARD.format(op=m.group(1)), text)
    if count:
        if "import torchvision.extension" not in patched:
            patched = patched.replace("import torch\n", "import torch\nimport torchvision.extension\n", 1)
        meta.write_text(patched)
    print(f"[setup] torchvision: guarded {count} CUDA-only fake registrations")


def strip_torchaudio_libs() -> None:
    root = site_packages_path("torchaudio")
    if root is None:
        return
    removed = 0
    for lib in (root / "lib").glob("*.so"):
        lib.unlink()
        removed += 1
    print(f"[setup] torchaudio: removed {removed} CUDA-linked libraries")


if __name__ == "__main__":
    guard_torchvision()
    strip_torchaudio_libs()
    sys.exit(0)
