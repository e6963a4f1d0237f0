"""The shipped workflows in ComfyUI's real frontend: dropped on the page in headless Chromium, queued, and shown.

Each workflow file is dropped on the canvas as a user drags it in. The test asserts that no node is missing
and no error dialog opens, lowers the step count and the working size in the widgets (as a user edits them,
to keep the suite fast on the CPU), queues with Ctrl+Enter, and waits until the UI has fetched the saved
output image. A screenshot of each is kept in test-artifacts/.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
from browser import ComfyBrowser

REPO = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
FAST_WIDGETS = {
    "KSampler": {"steps": 2},
    "OOTDiffusionScheduler": {"steps": 2},
    "IDMVTONCustomise": {"steps": 2},
    "TryOnPersonCrop": {"width": 192, "height": 256},
    "TryOnFitImage": {"width": 192, "height": 256},
}


@pytest.fixture(scope="module")
def ui(server):
    for sample in (REPO / "samples").glob("*.png"):
        shutil.copy(sample, server.workdir / "input" / sample.name)
    browser = ComfyBrowser(server.url, viewport=(2600, 1300))  # wide enough that the fitted graph renders at full detail
    try:
        browser.open(server)
        yield browser
    finally:
        browser.close()


def set_widgets(ui: ComfyBrowser, values: dict[str, dict[str, object]]) -> int:
    """Sets widget values on every node of a type, as typing into the widget does; returns how many were set."""
    return ui.page.evaluate(
        """(values) => { let count = 0;
        for (const node of window.app.graph._nodes) {
            const wanted = values[node.type]; if (!wanted) continue;
            for (const widget of node.widgets || []) {
                if (widget.name in wanted) { widget.value = wanted[widget.name]; widget.callback?.(widget.value); count++; }
            }
        }
        window.app.graph.setDirtyCanvas(true, true); return count; }""",
        values,
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_loads_queues_and_shows_its_output_in_the_real_frontend(server, ui, path):
    ui.drop_workflow(path)
    assert ui.missing_node_types() == []
    assert ui.dialog_texts() == [], ui.dialog_texts()
    expected = sum(1 for node in json.loads(path.read_text())["nodes"] if node["type"] in FAST_WIDGETS)
    assert set_widgets(ui, FAST_WIDGETS) >= expected
    run = ui.queue(server, timeout_s=600)
    ui.page.keyboard.press(".")  # fit the whole graph in view for the screenshot
    ui.page.wait_for_timeout(500)
    ui.screenshot(ARTIFACTS / f"browser_{path.stem}.png")
    assert run.node_errors == {}, run.node_errors
    assert run.prompt_id is not None
    assert run.execution_error is None, run.execution_error
    assert run.dialogs == [], run.dialogs
    assert run.output_images, "the UI never fetched the saved image"
    assert all(name.startswith(path.stem) for name in run.output_images)
