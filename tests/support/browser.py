"""Drives ComfyUI's real frontend in headless Chromium (Debian's `chromium`) with Playwright, as a user would.

Loads a workflow file by dropping it on the page, checks for missing-node and validation errors, queues it
with the keyboard shortcut, waits for the output image to be fetched by the UI and keeps a screenshot.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import time
from dataclasses import dataclass, field

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class BrowserRun:
    """What happened when a workflow was loaded and queued in the UI."""

    missing_node_types: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    node_errors: dict = field(default_factory=dict)
    execution_error: dict | None = None
    output_images: list[str] = field(default_factory=list)
    prompt_id: str | None = None
    screenshot: pathlib.Path | None = None
    console_errors: list[str] = field(default_factory=list)


class ComfyBrowser:
    """One headless Chromium on a ComfyUI server's page."""

    def __init__(self, url: str, viewport: tuple[int, int] = (1600, 1000)):
        from playwright.sync_api import sync_playwright

        executable = chromium_path()
        if executable is None:
            raise RuntimeError("Debian's chromium is not installed (the set-up installs it: apt-get install chromium)")
        self.url = url
        self._playwright = sync_playwright().start()
        # Playwright gives every launch a fresh, empty profile directory of its own
        self.browser = self._playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        self.page = self.browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.console_errors: list[str] = []
        self.page.on("console", lambda message: self.console_errors.append(message.text) if message.type == "error" else None)
        self.fetched_outputs: list[str] = []
        self.page.on("response", self._on_response)

    def _on_response(self, response) -> None:
        if "/view?" in response.url and "type=output" in response.url and response.status == 200:
            self.fetched_outputs.append(response.url)

    def open(self, server=None, timeout_s: float = 90) -> None:
        """Opens the app and waits until the graph and the node definitions are ready.

        With `server`, first marks the first-run tutorial as done, so no Templates dialog covers the canvas.
        """
        if server is not None:
            server.post_json("/settings/Comfy.TutorialCompleted", True)
        self.page.goto(self.url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
        self.page.wait_for_function(
            "() => window.app && window.app.graph && window.LiteGraph && Object.keys(window.LiteGraph.registered_node_types || {}).length > 50",
            timeout=timeout_s * 1000,
        )
        self.close_dialogs()

    def close_dialogs(self, settle_ms: int = 1500) -> None:
        self.page.wait_for_timeout(settle_ms)
        for _ in range(5):
            if self.page.locator(".p-dialog").count() == 0:
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(400)

    def dialog_texts(self) -> list[str]:
        return [text.strip() for text in self.page.locator(".p-dialog").all_inner_texts() if text.strip()]

    def drop_workflow(self, path: pathlib.Path) -> None:
        """Drops the workflow file on the canvas, as dragging it from a file manager does."""
        content = path.read_text()
        data_transfer = self.page.evaluate_handle(
            """([name, text]) => { const dt = new DataTransfer();
                dt.items.add(new File([text], name, {type: 'application/json'})); return dt; }""",
            [path.name, content],
        )
        canvas = self.page.locator("#graph-canvas")
        canvas.dispatch_event("dragover", {"dataTransfer": data_transfer})
        canvas.dispatch_event("drop", {"dataTransfer": data_transfer})
        expected = len(json.loads(content)["nodes"])
        self.page.wait_for_function(f"() => window.app.graph._nodes.length === {expected}", timeout=30_000)
        self.page.wait_for_timeout(1000)

    def missing_node_types(self) -> list[str]:
        return self.page.evaluate("""() => window.app.graph._nodes
            .filter(n => !(n.type in window.LiteGraph.registered_node_types) || n.has_errors)
            .map(n => n.type)""")

    def queue(self, server, timeout_s: float = 600) -> BrowserRun:
        """Queues the loaded workflow with Ctrl+Enter and waits for it to finish on the server and in the UI."""
        run = BrowserRun(missing_node_types=self.missing_node_types(), dialogs=self.dialog_texts())
        before = set(server.get_json("/history"))
        self.page.mouse.click(self.page.viewport_size["width"] - 40, self.page.viewport_size["height"] // 2)
        self.page.keyboard.press("Control+Enter")
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            errors = self.page.evaluate("() => window.app.lastNodeErrors || null")
            if errors:
                run.node_errors = errors
                break
            new = [pid for pid in server.get_json("/history") if pid not in before]
            if new:
                run.prompt_id = new[0]
                break
            time.sleep(0.5)
        if run.prompt_id:
            entry = server.wait_history(run.prompt_id, timeout_s)
            for kind, data in entry.get("status", {}).get("messages", []):
                if kind == "execution_error":
                    run.execution_error = data
            expected = [
                image["filename"] for output in entry.get("outputs", {}).values() for image in output.get("images", []) if image.get("type") == "output"
            ]
            while time.time() < deadline and expected and not all(any(name in url for url in self.fetched_outputs) for name in expected):
                self.page.wait_for_timeout(300)
            run.output_images = [name for name in expected if any(name in url for url in self.fetched_outputs)]
        run.dialogs += [text for text in self.dialog_texts() if text not in run.dialogs]
        run.console_errors = list(self.console_errors)
        return run

    def screenshot(self, path: pathlib.Path) -> pathlib.Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        try:
            self.browser.close()
        finally:
            self._playwright.stop()
