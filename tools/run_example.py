"""`make run`: the bundled `idm_vton_upper_body` workflow on the bundled sample images, in a headless ComfyUI.

`make run WORKFLOW=ootd_dc` (or `tools/run_example.py ootd_dc`) runs another workflow of `workflows/` instead.

The UI-format workflow is converted to API format with the server's own `/object_info` (no second copy).
Real weights are used when every model file the workflow names is in ComfyUI's model folders; otherwise a
loud banner says so, the tiny random fixture weights stand in under the same names, and the output is
labelled as a smoke test.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests" / "support")]

import comfy_host  # noqa: E402
import workflow_api  # noqa: E402

WORKFLOWS = REPO / "workflows"
DEFAULT_WORKFLOW = "idm_vton_upper_body"
OUTPUT = REPO / "output"
SAMPLES = REPO / "samples"
FIXTURE_CACHE = REPO / ".comfyui" / "fixtures"
SMOKE_PREFIX = "SMOKE_TEST_tiny_random_weights"
# Smoke runs of workflows with these nodes go at a smaller try-on size: on 2 CPU cores their tiny stand-ins take over
# 25 minutes at 768x1024 (OOTDiffusion's SD1.5 UNets attend at the full latent resolution, 12,288 tokens; Customise
# trains 100 steps). The output is noise from random weights either way.
SMOKE_SLOW_NODES = ("OOTDiffusionApply", "IDMVTONCustomise")
SMOKE_SIZE = {"width": 384, "height": 512}
SIZED_NODES = ("TryOnPersonCrop", "TryOnFitImage")


def missing_models(prompt: dict, object_info: dict) -> list[str]:
    """'Node.input = value' for every model-file choice in the prompt that the server does not list."""
    missing = []
    for node in prompt.values():
        definition = object_info.get(node["class_type"], {})
        specs = {**definition.get("input", {}).get("required", {}), **definition.get("input", {}).get("optional", {})}
        for name, value in node["inputs"].items():
            choices = workflow_api.combo_options(specs.get(name))
            if node["class_type"] == "LoadImage" or choices is None or not isinstance(value, str):
                continue
            looks_like_file = "." in value or "/" in value or name.endswith(("_name", "_model"))
            if looks_like_file and value not in choices and value != "none":
                missing.append(f"{node['class_type']}.{name} = {value}")
    return missing


def smoke_sized(prompt: dict) -> bool:
    """Lowers the try-on size to SMOKE_SIZE in a prompt with a SMOKE_SLOW_NODES node; whether it did."""
    if not any(node["class_type"] in SMOKE_SLOW_NODES for node in prompt.values()):
        return False
    for node in prompt.values():
        if node["class_type"] in SIZED_NODES:
            node["inputs"].update(SMOKE_SIZE)
    return True


def banner(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "#" * width)
    for line in lines:
        print(f"# {line.ljust(width - 4)} #")
    print("#" * width + "\n", flush=True)


def start(workdir: pathlib.Path, yaml: pathlib.Path | None, tiny: bool) -> comfy_host.ComfyServer:
    server = comfy_host.ComfyServer(workdir, yaml, tiny=tiny)
    for sample in SAMPLES.glob("*.png"):
        shutil.copy(sample, workdir / "input" / sample.name)
    server.wait_ready()
    return server


def keep_outputs(folder: pathlib.Path, smoke: bool) -> list[pathlib.Path]:
    """Copies the saved images to output/, never over an existing file."""
    OUTPUT.mkdir(exist_ok=True)
    written = []
    for image in sorted(folder.glob("*.png")):
        name = f"{SMOKE_PREFIX}_{image.name}" if smoke else image.name
        target = OUTPUT / name
        n = 1
        while target.exists():
            target = OUTPUT / f"{pathlib.Path(name).stem}_{n}.png"
            n += 1
        shutil.copy(image, target)
        written.append(target)
    return written


def workflow_path(name: str) -> pathlib.Path:
    """The shipped workflow `name` (with or without .json); an unknown name is an error listing the shipped ones."""
    stem = pathlib.Path(name).name.removesuffix(".json")
    path = WORKFLOWS / f"{stem}.json"
    if not stem or not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in WORKFLOWS.glob("*.json")))
        raise SystemExit(f"WORKFLOW={name!r} is not a workflow in {WORKFLOWS}; choose one of: {shipped}")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = workflow_path(argv[0] if argv and argv[0] else DEFAULT_WORKFLOW)
    workflow = json.loads(path.read_text())
    root = pathlib.Path(tempfile.mkdtemp(prefix="tryon_run_"))
    server = start(root / "real", None, tiny=False)
    try:
        object_info = server.get_json("/object_info")
        prompt = workflow_api.to_api(workflow, object_info)
        missing = missing_models(prompt, object_info)
    except BaseException:
        server.stop()
        raise
    smoke = bool(missing)
    if smoke:
        server.stop()
        banner(
            [
                f"NO REAL WEIGHTS for {path.stem}: these model files are not in " + str(comfy_host.COMFY_DIR / "models") + ":",
                *[f"  - {entry}" for entry in missing],
                "Running with TINY RANDOM FIXTURE WEIGHTS under the same names: the image is a SMOKE TEST, not a try-on.",
                "See README.md, 'Model set-up'.",
            ]
        )
        yaml = comfy_host.write_fixture_models(FIXTURE_CACHE, ("fast",))
        server = start(root / "tiny", yaml, tiny=True)
        prompt = workflow_api.to_api(workflow, server.get_json("/object_info"))
        if smoke_sized(prompt):
            print(f"Smoke test of {path.stem} at {SMOKE_SIZE['width']}x{SMOKE_SIZE['height']} (tiny stand-ins at 768x1024 take over 25 minutes on a CPU)")
    else:
        print(f"Real weights found; running {path.name}")
    try:
        entry = server.run(prompt, timeout=3600)
        error = comfy_host.execution_error(entry)
        if error:
            print(f"The workflow failed: {error}\nServer log: {server.log_path}", file=sys.stderr)
            return 1
        written = keep_outputs(server.workdir / "output", smoke)
        for path in written:
            print(f"wrote {path}" + ("   (SMOKE TEST: tiny random weights)" if smoke else ""))
        return 0 if written else 1
    finally:
        server.stop()
        if os.environ.get("TRYON_KEEP_WORKDIR") is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
