"""Converts a workflow saved by ComfyUI's frontend (UI format) into the API format that `POST /prompt` takes.

The node definitions come from a running server's `/object_info`, so the UI file stays the only copy of a
workflow: nothing hand-edited in API format can drift from it. Handles what our example workflows use and
what the frontend writes for them: widget values in definition order (with the extra "control after
generate" value after seeds and the upload widget of image loaders), widgets converted to inputs, Reroute
nodes, bypassed (mode 4) and muted (mode 2) nodes, and frontend-only nodes (notes, groups).
"""

from __future__ import annotations

import json
import pathlib
import sys

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODE_MUTED, MODE_BYPASSED = 2, 4


class WorkflowError(ValueError):
    """The workflow cannot be converted (unknown node, missing link); the message names the node."""


def is_widget(spec: list) -> bool:
    """Whether an input spec from /object_info is shown as a widget (not a socket) by the frontend."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def combo_options(spec: list) -> list | None:
    """The choices of a combo input spec from /object_info, in either form: classic nodes' `[[choices], {...}]` or
    V3 nodes' `["COMBO", {"options": [choices]}]`; None for any other input."""
    if not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options", []))
    return None


def extra_widget_values(spec: list) -> int:
    """How many frontend-only values follow this widget's value in `widgets_values`."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    extra = 0
    if options.get("control_after_generate"):
        extra += 1
    if options.get("image_upload") or options.get("video_upload") or options.get("audio_upload"):
        extra += 1
    return extra


def ordered_inputs(definition: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's required then optional inputs, in the frontend's order."""
    order = definition.get("input_order") or {}
    result = []
    for section in ("required", "optional"):
        specs = definition.get("input", {}).get(section, {}) or {}
        names = order.get(section) or list(specs)
        result += [(name, specs[name]) for name in names if name in specs]
    return result


def widget_values_by_name(node: dict, definition: dict) -> dict[str, object]:
    """Maps a UI node's `widgets_values` (a list, or a dict in some frontends) onto widget input names."""
    values = node.get("widgets_values") or []
    if isinstance(values, dict):
        return dict(values)
    named, position = {}, 0
    for name, spec in ordered_inputs(definition):
        if not is_widget(spec):
            continue
        if position >= len(values):
            break
        named[name] = values[position]
        position += 1 + extra_widget_values(spec)
    return named


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI-format workflow."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            links[link[0]] = (link[1], link[2])

    def source_of(link_id: int, seen: frozenset = frozenset()) -> list | None:
        """[node_id, slot] feeding a link, looking through Reroutes and bypassed nodes; None if muted/absent."""
        if link_id is None or link_id not in links:
            return None
        origin_id, slot = links[link_id]
        origin = nodes.get(origin_id)
        if origin is None or origin_id in seen:
            return None
        if origin["type"] == "Reroute":
            upstream = (origin.get("inputs") or [{}])[0].get("link")
            return source_of(upstream, seen | {origin_id})
        if origin.get("mode") == MODE_MUTED:
            return None
        if origin.get("mode") == MODE_BYPASSED:
            wanted = (origin.get("outputs") or [])[slot].get("type") if slot < len(origin.get("outputs") or []) else None
            for node_input in origin.get("inputs") or []:
                if node_input.get("link") is not None and node_input.get("type") == wanted:
                    return source_of(node_input["link"], seen | {origin_id})
            return None
        return [str(origin_id), slot]

    prompt = {}
    for node_id, node in nodes.items():
        kind = node["type"]
        if kind in FRONTEND_ONLY or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        definition = object_info.get(kind)
        if definition is None:
            raise WorkflowError(f"node {node_id} ({kind}) is not installed on this server (missing custom node?)")
        inputs = widget_values_by_name(node, definition)
        for node_input in node.get("inputs") or []:
            source = source_of(node_input.get("link"))
            if source is not None:
                inputs[node_input["name"]] = source
            elif node_input.get("link") is not None:
                inputs.pop(node_input["name"], None)
        title = node.get("title")
        prompt[str(node_id)] = {"class_type": kind, "inputs": inputs, **({"_meta": {"title": title}} if title else {})}
    return prompt


def main(argv: list[str]) -> int:
    """CLI: workflow_api.py WORKFLOW.json OBJECT_INFO.json > prompt.json"""
    if len(argv) != 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    workflow = json.loads(pathlib.Path(argv[0]).read_text())
    object_info = json.loads(pathlib.Path(argv[1]).read_text())
    print(json.dumps(to_api(workflow, object_info), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
