"""Starts ComfyUI's main.py with the test-only tiny model registrations (tests and `make run` smoke mode)."""

import pathlib
import runpy
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import comfy_host  # noqa: E402

comfy_host.put_comfy_on_path()
sys.argv = [str(comfy_host.COMFY_DIR / "main.py")] + sys.argv[1:]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
comfy_host.register_tiny_models()
runpy.run_path(str(comfy_host.COMFY_DIR / "main.py"), run_name="__main__")
