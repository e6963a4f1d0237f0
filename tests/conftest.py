"""Shared fixtures: ComfyUI on the path, tiny model folders, an in-process executor and a real server.

Layout: `unit/` (functions and in-process ComfyUI), `server/` (a real ComfyUI server), `browser/` (the real frontend
in headless Chromium), `support/` (helpers, importable by module name), `data/` (committed test data). Each test
gets the marker of its folder (`pytest -m unit`, `-m "not browser"`). Tests import the pack one way: the `pack`
fixture imports it as ComfyUI does, as the package `comfyui_tryon`; then `from comfyui_tryon.<module> import ...`.
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "support"))
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import comfy_host  # noqa: E402

comfy_host.prepare_in_process()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


KINDS = ("unit", "server", "browser")


def pytest_collection_modifyitems(config, items):
    """Marks every test with the kind of its folder."""
    for item in items:
        kind = pathlib.Path(str(item.fspath)).parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def fixture_models(tmp_path_factory) -> pathlib.Path:
    """extra_model_paths.yaml of a models tree holding every tiny fixture (fast preset)."""
    root = tmp_path_factory.mktemp("fixture_models")
    return comfy_host.write_fixture_models(root, ("fast",))


@pytest.fixture(scope="session")
def pack(fixture_models):
    """The pack imported as ComfyUI would, with folder_paths pointing at the fixtures."""
    import folder_paths
    from utils.extra_config import load_extra_path_config

    comfy_host.register_tiny_models()
    load_extra_path_config(str(fixture_models))
    module = comfy_host.import_pack()
    import asyncio

    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    extension = asyncio.run(module.comfy_entrypoint())  # as ComfyUI's V3 loader does
    for node in asyncio.run(extension.get_node_list()):
        schema = node.GET_SCHEMA()
        nodes.NODE_CLASS_MAPPINGS[schema.node_id] = node
        nodes.NODE_DISPLAY_NAME_MAPPINGS[schema.node_id] = schema.display_name
    folder_paths.set_output_directory(str(fixture_models.parent / "output"))
    return module


@pytest.fixture(scope="session")
def layout_repo(tmp_path_factory) -> pathlib.Path:
    """IDM-VTON HF layout folder with the real depths (70 transformer blocks)."""
    from tiny_models import PRESETS, write_idm_layout

    return write_idm_layout(tmp_path_factory.mktemp("layout"), PRESETS["layout"])


@pytest.fixture(scope="session")
def fast_repo(fixture_models) -> pathlib.Path:
    return fixture_models.parent / "models" / "idm_vton" / "IDM-VTON-tiny-fast"


@pytest.fixture(scope="session")
def executor(pack):
    """Runs API-format prompts in-process with ComfyUI's PromptExecutor."""
    import execution

    class StubServer:
        client_id = None
        last_node_id = None
        last_prompt_id = None

        def send_sync(self, event, data, sid=None):
            pass

    prompt_executor = execution.PromptExecutor(StubServer(), cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0})

    def run(prompt: dict, outputs: list[str] | None = None) -> dict:
        import asyncio

        valid = asyncio.run(execution.validate_prompt("test", prompt, None))
        if not valid[0]:
            raise comfy_host.PromptRejected(valid[1], valid[3])
        prompt_executor.execute(prompt, "test", {}, outputs or valid[2])
        return {"success": prompt_executor.success, "messages": prompt_executor.status_messages, "history": prompt_executor.history_result}

    return run


@pytest.fixture(scope="session")
def server(fixture_models, tmp_path_factory):
    """A real ComfyUI server with this pack loaded and the tiny fixtures in its model paths."""
    host = comfy_host.ComfyServer(tmp_path_factory.mktemp("server"), fixture_models)
    try:
        host.wait_ready()
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session")
def host(fixture_models, tmp_path_factory):
    """The reliability matrix's server: the fixtures plus bad model files and test-only input nodes."""
    import reliability_host

    server = reliability_host.start_server(tmp_path_factory.mktemp("reliability"), fixture_models)
    try:
        yield server
    finally:
        server.stop()
