"""One catalogue worker: a headless ComfyUI in this process that runs a workflow job after job.

The same class runs in-process (`--workers 0`) and as a Ray actor (tools/catalogue_ray.py wraps it; this module
never imports Ray). ComfyUI is loaded once per process with its own model folders plus the given
extra_model_paths files and its custom nodes (this pack among them); ComfyUI's executor keeps every node output
whose inputs did not change between jobs, so the models load on the first job and stay loaded, and consecutive jobs
with the same garment reuse its prepared images and caption.

A job's images arrive as bytes and are written into ComfyUI's input folder under `catalogue/<content hash>.<ext>`
(never over a user's file); the workflow's SaveImage outputs are read back as PNG bytes and removed from the
worker's private output folder. The driver writes them to the catalogue's output folder.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import importlib.util
import io
import os
import pathlib
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

from catalogue_jobs import write_atomic
from catalogue_workflow import IMAGE_ROLES, CatalogueError, apply_job, apply_sets, check_targets, is_ui_format, output_nodes

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
INPUT_SUBFOLDER = "catalogue"
PACK_NODE = "IDMVTONApply"  # a node id of this pack: loaded from the repo when ComfyUI's custom_nodes lacks it


def default_comfyui() -> pathlib.Path:
    """COMFYUI_PATH, else the ComfyUI this pack is installed in (custom_nodes/<pack>), else the embedded .comfyui/ComfyUI."""
    if os.environ.get("COMFYUI_PATH"):
        return pathlib.Path(os.environ["COMFYUI_PATH"]).resolve()
    if REPO.parent.name == "custom_nodes":
        return REPO.parent.parent
    return REPO / ".comfyui" / "ComfyUI"


@dataclass
class WorkerSettings:
    """Everything a worker needs (picklable; a Ray actor restarted after a crash is built again from it)."""

    workflow: dict
    targets: dict[str, list[tuple[str, str]]]
    sets: list[tuple[str, str, object]] = field(default_factory=list)
    output_specs: list[str] | None = None
    comfyui: str = ""
    extra_model_paths: list[str] = field(default_factory=list)
    input_dir: str | None = None
    worker_init: str | None = None
    threads: int | None = None
    verbose: bool = False


class JobFailed(Exception):
    """The job cannot be rendered; the message is what the manifest records."""


# ----------------------------------------------------------------------------------------------
# ComfyUI in this process
# ----------------------------------------------------------------------------------------------
_STARTED: dict = {}


def run_hook(spec: str) -> None:
    """Runs `FILE.py[:FUNCTION]` (default function: init_worker) before ComfyUI loads its nodes, e.g. to register model configs."""
    path, _, function = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(f"catalogue_worker_init_{abs(hash(path))}", path)
    if module_spec is None or not os.path.isfile(path):
        raise CatalogueError(f"--worker-init: no such Python file {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    hook = getattr(module, function or "init_worker", None)
    if hook is None:
        raise CatalogueError(f"--worker-init: {path} has no function {function or 'init_worker'}")
    hook()


def start_comfyui(settings: WorkerSettings, work: pathlib.Path) -> None:
    """ComfyUI importable and initialised in this process (once): device, model folders, custom nodes."""
    if _STARTED:
        return
    comfy_dir = pathlib.Path(settings.comfyui or default_comfyui()).resolve()
    if not (comfy_dir / "execution.py").is_file():
        raise CatalogueError(f"--comfyui: {comfy_dir} is not a ComfyUI folder (no execution.py); set COMFYUI_PATH or --comfyui")
    # the repo root must not be on the path: the pack's nodes/ folder would shadow ComfyUI's nodes.py
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != REPO]
    sys.path.insert(0, str(comfy_dir))
    import torch
    import utils.install_util  # noqa: F401  (ComfyUI's utils package, before comfy/utils.py can shadow it)

    if settings.threads:
        torch.set_num_threads(settings.threads)
    import comfy.cli_args  # ComfyUI's defaults: its argument parsing stays off, our command line is not its

    if "comfy.model_management" not in sys.modules:
        comfy.cli_args.args.cpu = not torch.cuda.is_available()
    if settings.worker_init:
        run_hook(settings.worker_init)

    import folder_paths
    from utils.extra_config import load_extra_path_config

    own_yaml = comfy_dir / "extra_model_paths.yaml"
    for yaml in ([own_yaml] if own_yaml.is_file() else []) + [pathlib.Path(p) for p in settings.extra_model_paths]:
        if not yaml.is_file():
            raise CatalogueError(f"--extra-model-paths: no such file {yaml}")
        load_extra_path_config(str(yaml))
    folder_paths.set_output_directory(str(work / "output"))
    folder_paths.set_temp_directory(str(work / "temp"))
    if settings.input_dir:
        pathlib.Path(settings.input_dir).mkdir(parents=True, exist_ok=True)
        folder_paths.set_input_directory(str(pathlib.Path(settings.input_dir).resolve()))

    import comfy.utils

    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    if PACK_NODE not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.load_custom_node(str(REPO)))
    comfy.utils.set_progress_bar_enabled(settings.verbose)
    _STARTED["comfyui"] = str(comfy_dir)


def node_definitions(types: set[str]) -> dict:
    """The /object_info entries (inputs and their order) of the given node types that are installed."""
    import nodes

    info = {}
    for node_type in types:
        node_class = nodes.NODE_CLASS_MAPPINGS.get(node_type)
        if node_class is None:
            continue
        if hasattr(node_class, "GET_NODE_INFO_V1"):
            info[node_type] = node_class.GET_NODE_INFO_V1()
        else:
            inputs = node_class.INPUT_TYPES()
            info[node_type] = {"input": inputs, "input_order": {section: list(specs) for section, specs in inputs.items()}}
    return info


def api_prompt(settings: WorkerSettings) -> dict:
    """The workflow in API format (converted with this ComfyUI's node definitions), with the --set values."""
    import workflow_api

    workflow = settings.workflow
    if is_ui_format(workflow):
        try:
            prompt = workflow_api.to_api(workflow, node_definitions({n["type"] for n in workflow["nodes"]}))
        except workflow_api.WorkflowError as error:
            raise CatalogueError(f"workflow: {error}") from None
    else:
        import nodes

        missing = sorted({n["class_type"] for n in workflow.values()} - set(nodes.NODE_CLASS_MAPPINGS))
        if missing:
            raise CatalogueError(f"workflow: node type(s) {', '.join(missing)} are not installed in this ComfyUI (missing custom node?)")
        prompt = workflow
    prompt = apply_sets(prompt, settings.sets)
    check_targets(prompt, settings.targets)
    return prompt


# ----------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------
def node_label(prompt: dict, node_id: str) -> str:
    node = prompt.get(node_id, {})
    title = (node.get("_meta") or {}).get("title")
    return f"{node.get('class_type', '?')} #{node_id}" + (f" '{title}'" if title else "")


def validation_text(prompt: dict, result: tuple) -> str:
    _, error, _, node_errors = result
    parts = []
    for node_id, entry in (node_errors or {}).items():
        for reason in entry.get("errors", []):
            parts.append(f"{node_label(prompt, node_id)}: {reason.get('message')}: {reason.get('details')}")
    return "; ".join(parts) or f"{(error or {}).get('message')}: {(error or {}).get('details')}"


def execution_text(prompt: dict, messages: list) -> str:
    for kind, data in messages:
        if kind == "execution_error":
            exception = str(data.get("exception_type", "")).rsplit(".", 1)[-1]
            return f"{node_label(prompt, str(data.get('node_id')))}: {exception}: {str(data.get('exception_message', '')).strip()}"
        if kind == "execution_interrupted":
            return f"interrupted in {node_label(prompt, str(data.get('node_id')))}"
    return "the workflow failed without an error message"


# ----------------------------------------------------------------------------------------------
# The worker
# ----------------------------------------------------------------------------------------------
def private_folder() -> pathlib.Path:
    """This process's scratch folder (ComfyUI's output and temp), removed at exit; folders of dead workers are removed too."""
    root = pathlib.Path(tempfile.gettempdir()) / "tryon_catalogue"
    root.mkdir(exist_ok=True)
    for folder in root.glob("worker_*"):
        try:
            os.kill(int(folder.name.split("_", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)  # left by a worker that was killed
        except (ValueError, PermissionError):
            pass
    folder = root / f"worker_{os.getpid()}"
    folder.mkdir(exist_ok=True)
    atexit.register(shutil.rmtree, folder, True)
    return folder


class _NoServer:
    """What ComfyUI's executor needs of its server when nobody listens."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        pass


class Worker:
    """A headless ComfyUI executor for one workflow. A failed start is reported by describe(), not raised."""

    def __init__(self, settings: WorkerSettings, index: int = 0):
        started = time.perf_counter()
        self.index = index
        self.settings = settings
        self.error: str | None = None
        self.work = private_folder()
        try:
            start_comfyui(settings, self.work)
            import execution
            import folder_paths

            self.prompt = api_prompt(settings)
            self.outputs = output_nodes(self.prompt, settings.output_specs)
            self.input_dir = pathlib.Path(folder_paths.get_input_directory()) / INPUT_SUBFOLDER
            self.input_dir.mkdir(parents=True, exist_ok=True)
            self.executor = execution.PromptExecutor(_NoServer(), cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0})
        except CatalogueError as error:
            self.error = str(error)
        except Exception as error:  # a worker that cannot start says why instead of dying in a restart loop
            self.error = f"the worker could not start ComfyUI: {type(error).__name__}: {error}"
        self.startup_seconds = time.perf_counter() - started

    def describe(self) -> dict:
        device = None
        if self.error is None:
            import comfy.model_management

            device = str(comfy.model_management.get_torch_device())
        return {
            "index": self.index,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": device,
            "startup_seconds": self.startup_seconds,
            "error": self.error,
        }

    def close(self) -> None:
        """Removes the scratch folder (a worker killed without close() leaves it to the next worker's clean-up)."""
        shutil.rmtree(self.work, ignore_errors=True)

    def stage_image(self, role: str, image: dict) -> str:
        """Writes a job image into ComfyUI's input folder under its content hash; returns the LoadImage name."""
        from PIL import Image

        data, path = image["data"], image["path"]
        digest = hashlib.sha256(data).hexdigest()
        if image.get("sha") and digest != image["sha"]:
            raise JobFailed(f"{role}: {path} changed while the catalogue was running; run the command again")
        try:
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()
        except Exception as error:
            raise JobFailed(f"{role}: {path} is not a readable image ({type(error).__name__}: {error})") from None
        suffix = pathlib.Path(path).suffix.lower() or ".png"
        name = f"{digest[:32]}{suffix}"
        if not (self.input_dir / name).is_file():
            write_atomic(self.input_dir / name, data)
        return f"{INPUT_SUBFOLDER}/{name}"

    def execute(self, prompt: dict, prompt_id: str) -> list[bytes]:
        """Runs the prompt's output nodes; returns their saved images (PNG bytes, in output node order)."""
        import execution
        import folder_paths

        result = asyncio.run(execution.validate_prompt(prompt_id, prompt, self.outputs))
        if not result[0] or result[3]:
            raise JobFailed(validation_text(prompt, result))
        self.executor.execute(prompt, prompt_id, {}, result[2])
        if not self.executor.success:
            raise JobFailed(execution_text(prompt, self.executor.status_messages))
        images = []
        output_dir = pathlib.Path(folder_paths.get_output_directory())
        for node_id in self.outputs:
            for saved in self.executor.history_result["outputs"].get(node_id, {}).get("images", []):
                path = output_dir / saved.get("subfolder", "") / saved["filename"]
                images.append(path.read_bytes())
                path.unlink()
        if not images:
            raise JobFailed(f"the output node(s) {', '.join(node_label(prompt, n) for n in self.outputs)} saved no image")
        return images

    def run(self, job: dict) -> dict:
        """Renders one job: {job_id, person: {path, sha, data}, garment: {...}, category, description, seed}."""
        started, cpu_started = time.perf_counter(), time.process_time()
        result = {"job_id": job["job_id"], "worker": self.index, "pid": os.getpid(), "images": [], "error": None}
        if self.error is not None:
            return {**result, "status": "worker_error", "error": self.error, "seconds": 0.0}
        try:
            values = {role: self.stage_image(role, job[role]) for role in IMAGE_ROLES}
            values.update({key: job.get(key) for key in ("category", "description", "seed")})
            prompt = apply_job(self.prompt, self.settings.targets, values)
            result["images"] = self.execute(prompt, job["job_id"])
            result["status"] = "done"
        except JobFailed as failure:
            result.update(status="failed", error=str(failure))
        except Exception as error:
            result.update(status="failed", error=f"{type(error).__name__}: {error}")
        result["seconds"] = time.perf_counter() - started
        result["cpu_seconds"] = time.process_time() - cpu_started  # all threads of the worker process
        return result
