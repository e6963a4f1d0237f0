"""Test inputs for the catalogue runner (tools/catalogue.py): small photos, fast workflow overrides, the worker hook.

`init_worker` is the `--worker-init` hook the tests and the catalogue benchmark give every worker: it registers
the tiny model configs (tests/support/comfy_host.py) so ComfyUI's stock loaders accept the fixture checkpoints.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

WIDTH, HEIGHT = 64, 80  # small (the fixture VAE is full-size), not square (catches swapped sides)
HOOK = f"{HERE / 'catalogue_fixtures.py'}:init_worker"
# --set values that make the shipped workflows fast on the tiny fixtures (the workflow files stay unchanged)
FAST_SETS = (
    "KSampler.steps=2",
    f"TryOnPersonCrop.width={WIDTH}",
    f"TryOnPersonCrop.height={HEIGHT}",
    f"TryOnFitImage.width={WIDTH}",
    f"TryOnFitImage.height={HEIGHT}",
    "TryOnDensePose.detection_resolution=64",
)
# (scene width, x, y) of each synthetic person in a WIDTH x HEIGHT photo
PERSONS = ((60, 2, 0), (52, 6, 8), (56, 0, 4))
GARMENT_COLOURS = ((200, 40, 40), (40, 60, 200))


def init_worker() -> None:
    import comfy_host

    comfy_host.register_tiny_models()


def person_photo(scene_width: int, x: int, y: int) -> np.ndarray:
    """A synthetic person (painted in the colours the tiny parsing nets parse) on white."""
    import fixtures_parsing

    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    person = fixtures_parsing.scene_labels(scene_width, scene_width * 4 // 3)
    part = person[: HEIGHT - y, : WIDTH - x]
    region = labels[y : y + part.shape[0], x : x + part.shape[1]]
    region[part != 0] = part[part != 0]
    return fixtures_parsing.paint(labels)


def garment_photo(colour: tuple[int, int, int]) -> np.ndarray:
    garment = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    garment[HEIGHT // 6 : HEIGHT * 5 // 6, WIDTH // 5 : WIDTH * 4 // 5] = colour
    return garment


def write_photos(root: pathlib.Path, persons=PERSONS, garment_colours=GARMENT_COLOURS) -> dict[str, list[pathlib.Path]]:
    """persons/ (one person per (size, x, y) spec: 3 by default), garments/ (one per colour: 2), and nobody.png (a
    white photo, no person) under `root`."""
    out = {"persons": [], "garments": []}
    for folder in ("persons", "garments"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for n, spec in enumerate(persons):
        path = root / "persons" / f"model_{n}.png"
        Image.fromarray(person_photo(*spec)).save(path)
        out["persons"].append(path)
    for n, colour in enumerate(garment_colours):
        path = root / "garments" / f"garment_{n}.png"
        Image.fromarray(garment_photo(colour)).save(path)
        out["garments"].append(path)
    nobody = root / "nobody.png"
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 255, np.uint8)).save(nobody)
    out["nobody"] = [nobody]
    return out


def fast_args(extra_model_paths: pathlib.Path, input_dir: pathlib.Path) -> list[str]:
    """Command-line flags that point the workers at the tiny fixtures and make each job fast."""
    args = ["--extra-model-paths", str(extra_model_paths), "--input-dir", str(input_dir), "--worker-init", HOOK, "--threads", "1", "--no-progress"]
    for item in FAST_SETS:
        args += ["--set", item]
    return args
