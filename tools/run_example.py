"""`make run`: the bundled try-on workflow on the bundled sample images, in a headless ComfyUI.

Real weights are used when every part is found in ComfyUI's model folders; otherwise a loud banner
says so and the tiny random fixture weights are used, and the output is labelled as a smoke test.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import comfy_host  # noqa: E402
import graphs  # noqa: E402

OUTPUT = REPO / "output"
SAMPLES = REPO / "samples"
FIXTURE_CACHE = REPO / ".comfyui" / "fixtures"
GIB = 1 << 30


def find_real_weights() -> dict[str, str] | None:
    """Names (relative to their folder) of real TryonNet, SDXL checkpoint and CLIP ViT-H files, if all are present."""
    models = comfy_host.COMFY_DIR / "models"

    def first(folder: str, accept) -> str | None:
        root = models / folder
        if not root.is_dir():
            return None
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and accept(rel.lower()) and path.stat().st_size > GIB // 2:
                return rel
        return None

    found = {
        "tryon": first("idm_vton", lambda n: "unet/" in n or ("tryon" in n and "encoder" not in n)),
        "checkpoint": first("checkpoints", lambda n: "xl" in n and n.endswith(".safetensors")),
        "clip_vision": first("clip_vision", lambda n: "h-14" in n or "vit-h" in n or "vit_h" in n),
    }
    return found if all(found.values()) else None


def banner(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "#" * width)
    for line in lines:
        print(f"# {line.ljust(width - 4)} #")
    print("#" * width + "\n", flush=True)


def main() -> int:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="tryon_run_"))
    real = find_real_weights()
    if real:
        print(f"Real weights found: {real}")
        graph = graphs.tryon_graph("person.png", "garment.png", "mask.png", "densepose.png", steps=30,
                                   sampler="ddpm", scheduler="ddim_uniform", use_our_sampler=True)
        graph["tryon"]["inputs"]["tryon_net_name"] = real["tryon"]
        graph["ckpt"]["inputs"]["ckpt_name"] = real["checkpoint"]
        graph["vision"]["inputs"]["clip_name"] = real["clip_vision"]
        prefix, yaml, tiny = "idm_vton_tryon", None, False
    else:
        banner(["NO REAL IDM-VTON WEIGHTS FOUND in " + str(comfy_host.COMFY_DIR / "models"),
                "Needed: models/idm_vton/<IDM-VTON>/unet/..., an SDXL checkpoint, CLIP-ViT-H-14 in clip_vision/.",
                "Running with TINY RANDOM FIXTURE WEIGHTS: the image is a SMOKE TEST, not a try-on.",
                "See README.md, 'Where real weights go'."])
        yaml = comfy_host.write_fixture_models(FIXTURE_CACHE, ("fast",))
        graph = graphs.tryon_graph("person.png", "garment.png", "mask.png", "densepose.png", steps=30,
                                   sampler="ddpm", scheduler="ddim_uniform", use_our_sampler=True)
        prefix, tiny = "SMOKE_TEST_tiny_random_weights", True
    graph["save"]["inputs"]["filename_prefix"] = prefix
    server = comfy_host.ComfyServer(workdir, yaml, tiny=tiny)
    for sample in SAMPLES.glob("*.png"):
        shutil.copy(sample, workdir / "input" / sample.name)
    try:
        server.wait_ready()
        entry = server.run(graph, timeout=3600)
        error = comfy_host.execution_error(entry)
        if error:
            print(f"The workflow failed: {error}\nServer log: {server.log_path}", file=sys.stderr)
            return 1
        OUTPUT.mkdir(exist_ok=True)
        written = []
        for image in (workdir / "output").glob("*.png"):
            target = OUTPUT / image.name
            if target.exists():  # never overwrite an earlier result
                stem, n = image.stem, 1
                while (OUTPUT / f"{stem}_{n}.png").exists():
                    n += 1
                target = OUTPUT / f"{stem}_{n}.png"
            shutil.copy(image, target)
            written.append(target)
        for path in written:
            print(f"wrote {path}" + ("   (SMOKE TEST: tiny random weights)" if tiny else ""))
        return 0 if written else 1
    finally:
        server.stop()
        if os.environ.get("TRYON_KEEP_WORKDIR") is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
