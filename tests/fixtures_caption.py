"""Tiny caption fixtures in the real file formats and folder layout (placeholder until its issue lands)."""

from __future__ import annotations

import pathlib


def write(models: pathlib.Path) -> None:
    """Writes the fixtures under `models/` (a ComfyUI models tree); existing files are kept."""
