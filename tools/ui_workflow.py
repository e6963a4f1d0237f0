"""Writes workflows in ComfyUI's UI format (what the frontend saves and loads) from a short description.

Used by `tools/build_workflows.py` to produce the files in `workflows/`. Node definitions (input order,
widgets, outputs) come from a running server's `/object_info`, so the files match the installed nodes.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field

from workflow_api import extra_widget_values, is_widget, ordered_inputs

NODE_WIDTH = 320
ROW = 22
WIDGET_ROW = 26


@dataclass
class Output:
    node_id: int
    slot: int


@dataclass
class UIWorkflow:
    object_info: dict
    nodes: list[dict] = field(default_factory=list)
    links: list[list] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)

    def node(
        self,
        kind: str,
        pos: tuple[int, int],
        widgets: dict | None = None,
        links: dict[str, Output] | None = None,
        title: str | None = None,
        width: int = NODE_WIDTH,
    ) -> UINode:
        """Adds a node; `widgets` override defaults, `links` connect inputs (sockets or widgets) to outputs."""
        definition = self.object_info[kind]
        widgets, links = dict(widgets or {}), dict(links or {})
        node_id = len(self.nodes) + 1
        inputs, values = [], []
        for name, spec in ordered_inputs(definition):
            kind_name = "COMBO" if isinstance(spec[0], list) else spec[0]
            if is_widget(spec):
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                value = widgets.pop(name, default_value(spec, options))
                values.append(value)
                values += ["fixed"] * bool(options.get("control_after_generate"))
                values += ["image"] * (extra_widget_values(spec) - bool(options.get("control_after_generate")))
                if name in links:
                    inputs.append({"name": name, "type": kind_name, "widget": {"name": name}, "link": None})
            else:
                inputs.append({"name": name, "type": kind_name, "link": None})
        if widgets:
            raise KeyError(f"{kind}: no widgets named {sorted(widgets)}")
        names = definition.get("output_name") or definition["output"]
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(zip(names, definition["output"], strict=True))]
        rows = max(len(inputs), len(outputs))
        node = {
            "id": node_id,
            "type": kind,
            "pos": list(pos),
            "size": [width, 46 + ROW * rows + WIDGET_ROW * len(values)],
            "flags": {},
            "order": node_id - 1,
            "mode": 0,
            "inputs": inputs,
            "outputs": outputs,
            "properties": {"Node name for S&R": kind},
            "widgets_values": values,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        for name, source in links.items():
            self.connect(source, node_id, name)
        return UINode(node_id, node)

    def connect(self, source: Output, target_id: int, input_name: str) -> None:
        target = self.nodes[target_id - 1]
        slot = next((i for i, entry in enumerate(target["inputs"]) if entry["name"] == input_name), None)
        if slot is None:
            raise KeyError(f"{target['type']} has no input {input_name!r}")
        origin = self.nodes[source.node_id - 1]
        link_id = len(self.links) + 1
        kind = origin["outputs"][source.slot]["type"]
        self.links.append([link_id, source.node_id, source.slot, target_id, slot, kind])
        target["inputs"][slot]["link"] = link_id
        origin["outputs"][source.slot]["links"].append(link_id)

    def note(self, text: str, pos: tuple[int, int], size: tuple[int, int] = (420, 200), title: str = "Note") -> None:
        node_id = len(self.nodes) + 1
        self.nodes.append(
            {
                "id": node_id,
                "type": "Note",
                "pos": list(pos),
                "size": list(size),
                "flags": {},
                "order": node_id - 1,
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "title": title,
                "properties": {"text": ""},
                "widgets_values": [text],
                "color": "#432",
                "bgcolor": "#653",
            }
        )

    def group(self, title: str, box: tuple[int, int, int, int]) -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(box), "color": "#3f789e", "font_size": 24, "flags": {}})

    def to_json(self) -> dict:
        return {
            "id": "00000000-0000-4000-8000-000000000000",
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [40, 40]}},
            "version": 0.4,
        }

    def save(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


@dataclass
class UINode:
    node_id: int
    data: dict

    def out(self, name_or_slot: str | int) -> Output:
        if isinstance(name_or_slot, int):
            return Output(self.node_id, name_or_slot)
        for slot, output in enumerate(self.data["outputs"]):
            if output["name"] == name_or_slot:
                return Output(self.node_id, slot)
        raise KeyError(f"{self.data['type']} has no output {name_or_slot!r}")


def default_value(spec: list, options: dict):
    if "default" in options:
        return options["default"]
    if isinstance(spec[0], list):
        return spec[0][0] if spec[0] else ""
    if spec[0] == "COMBO":
        choices = options.get("options") or [""]
        return choices[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0], None)
