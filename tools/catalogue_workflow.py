"""The catalogue runner's view of a workflow: which node inputs a job fills, overrides, and a stable digest.

Plain Python (no ComfyUI, no Ray), so the driver can check a workflow before any worker starts. A workflow is a
file saved by ComfyUI's frontend (UI format: `{"nodes": [...], "links": [...]}`) or exported for the API
(`{"<node id>": {"class_type": ..., "inputs": {...}}}`); the worker converts the UI format with
`tools/workflow_api.py` against its own node definitions.

A *role* is a value a job provides: the person image, the garment image, the category, the description and
the seed. Each role maps to a list of targets `(node id, input name)`. The default map finds them by node type
and title in the shipped workflows (`workflows/*.json`); `NODE` specs given on the command line override it.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass

from workflow_api import FRONTEND_ONLY, MODE_BYPASSED, MODE_MUTED

ROLES = ("person", "garment", "category", "description", "seed")
REQUIRED_ROLES = ("person", "garment")
IMAGE_ROLES = ("person", "garment")

# role -> (node type, input name, title must contain) of the default map; every matching node is a target
DEFAULT_TARGETS: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    "person": (("LoadImage", "image", "person"),),
    "garment": (("LoadImage", "image", "garment"),),
    "category": (("TryOnAgnosticMask", "category", None), ("TryOnGarmentCaption", "category", None), ("OOTDiffusionApply", "category", None)),
    "description": (("TryOnGarmentCaption", "description", None),),
    "seed": (
        ("KSampler", "seed", None),
        ("IDMVTONSampler", "seed", None),
        ("KSamplerAdvanced", "noise_seed", None),
        ("SamplerCustom", "noise_seed", None),
        ("RandomNoise", "noise_seed", None),
    ),
}
SEED_INPUTS = {node_type: input_name for node_type, input_name, _ in DEFAULT_TARGETS["seed"]}  # e.g. SamplerCustom -> noise_seed
# the input a role's node spec means when it names no input
DEFAULT_INPUT = {"person": "image", "garment": "image", "category": "category", "description": "description", "seed": "seed"}
OUTPUT_TYPES = ("SaveImage",)


class CatalogueError(Exception):
    """A problem with the command's inputs (workflow, jobs, flags); the message says what to change."""


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    title: str


def load_workflow(path: pathlib.Path) -> dict:
    try:
        workflow = json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        raise CatalogueError(f"workflow: no such file {path}") from None
    except json.JSONDecodeError as error:
        raise CatalogueError(f"workflow: {path} is not JSON ({error})") from None
    if not isinstance(workflow, dict) or not (is_ui_format(workflow) or is_api_format(workflow)):
        raise CatalogueError(f"workflow: {path} is neither a UI workflow (nodes and links) nor an API prompt (node id -> class_type and inputs)")
    return workflow


def is_ui_format(workflow: dict) -> bool:
    return isinstance(workflow.get("nodes"), list)


def is_api_format(workflow: dict) -> bool:
    return bool(workflow) and all(isinstance(node, dict) and "class_type" in node for node in workflow.values())


def nodes_of(workflow: dict) -> list[Node]:
    """The executable nodes (id, type, title) of a UI or API workflow; notes, reroutes, muted and bypassed nodes left out."""
    if is_ui_format(workflow):
        return [
            Node(str(node["id"]), node["type"], node.get("title") or "")
            for node in workflow["nodes"]
            if node["type"] not in FRONTEND_ONLY and node.get("mode") not in (MODE_MUTED, MODE_BYPASSED)
        ]
    return [Node(str(node_id), node["class_type"], (node.get("_meta") or {}).get("title") or "") for node_id, node in workflow.items()]


def describe(node: Node) -> str:
    return f"#{node.id} {node.type}" + (f" '{node.title}'" if node.title else "")


def match_nodes(nodes: list[Node], spec: str) -> list[Node]:
    """Nodes named by `spec`: a node id, else an exact title (then case-insensitive), else a node type (every node of it)."""
    for test in (
        lambda n: n.id == spec,
        lambda n: n.title == spec,
        lambda n: n.title.lower() == spec.lower() and spec != "",
        lambda n: n.type == spec,
    ):
        found = [n for n in nodes if test(n)]
        if found:
            return found
    return []


def parse_node_spec(nodes: list[Node], spec: str, default_input: str | None) -> tuple[list[Node], str | None]:
    """`NODE` or `NODE.input` -> (nodes, input name); the whole text is tried as a node first (titles may hold dots)."""
    found = match_nodes(nodes, spec)
    if found:
        return found, default_input
    if "." in spec:
        head, _, tail = spec.rpartition(".")
        found = match_nodes(nodes, head)
        if found and tail:
            return found, tail
    known = ", ".join(describe(n) for n in nodes)
    raise CatalogueError(f"no node matches '{spec}' (a node id, title or type; append .input to name the input). The workflow has: {known}")


def role_targets(workflow: dict, specs: dict[str, list[str]] | None = None) -> dict[str, list[tuple[str, str]]]:
    """role -> [(node id, input name)]: the default map, with the roles named in `specs` replaced by those nodes."""
    nodes = nodes_of(workflow)
    specs = {role: list(values) for role, values in (specs or {}).items() if values}
    targets: dict[str, list[tuple[str, str]]] = {}
    for role in ROLES:
        found: list[tuple[str, str]] = []
        if role in specs:
            for spec in specs[role]:
                matched, input_name = parse_node_spec(nodes, spec, DEFAULT_INPUT[role])
                for node in matched:
                    name = input_name
                    if role == "seed" and input_name == "seed":
                        name = SEED_INPUTS.get(node.type, input_name)
                    found.append((node.id, name))
        else:
            for node_type, input_name, title_word in DEFAULT_TARGETS[role]:
                for node in nodes:
                    if node.type == node_type and (title_word is None or title_word in node.title.lower()):
                        found.append((node.id, input_name))
        targets[role] = list(dict.fromkeys(found))
    for role in REQUIRED_ROLES:
        if not targets[role]:
            loaders = ", ".join(describe(n) for n in nodes if n.type == "LoadImage") or "none"
            raise CatalogueError(
                f"the workflow has no {role} image node: the default map looks for a LoadImage whose title contains '{role}'. "
                f"Name it with --{role}-node TITLE_OR_ID (LoadImage nodes: {loaders})"
            )
    return targets


def output_nodes(prompt: dict, specs: list[str] | None = None) -> list[str]:
    """Ids of the nodes whose images are a job's output: `specs`, else every SaveImage node."""
    nodes = nodes_of(prompt)
    if specs:
        return list(dict.fromkeys(n.id for spec in specs for n in parse_node_spec(nodes, spec, None)[0]))
    found = [n.id for n in nodes if n.type in OUTPUT_TYPES]
    if not found:
        raise CatalogueError("the workflow has no SaveImage node: add one, or name the output node with --output-node TITLE_OR_ID")
    return found


def parse_value(text: str):
    """A --set value: JSON when it parses (numbers, true/false, quoted strings), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: list[str] | None) -> list[tuple[str, str, object]]:
    """`NODE.input=VALUE` items -> [(node spec, input, value)]."""
    result = []
    for item in items or []:
        target, sep, value = item.partition("=")
        node_spec, dot, input_name = target.rpartition(".")
        if not sep or not dot or not node_spec or not input_name:
            raise CatalogueError(f"--set {item!r}: write NODE.input=VALUE (NODE: a node id, title or type), e.g. --set KSampler.steps=20")
        result.append((node_spec, input_name, parse_value(value)))
    return result


def apply_sets(prompt: dict, sets: list[tuple[str, str, object]]) -> dict:
    """The API prompt with the --set values written in (every node a spec names); the input must exist."""
    prompt = json.loads(json.dumps(prompt))
    nodes = nodes_of(prompt)
    for node_spec, input_name, value in sets:
        found = match_nodes(nodes, node_spec)
        if not found:
            raise CatalogueError(f"--set {node_spec}.{input_name}: no node matches '{node_spec}' ({', '.join(describe(n) for n in nodes)})")
        for node in found:
            inputs = prompt[node.id]["inputs"]
            if input_name not in inputs or isinstance(inputs[input_name], list):
                widgets = ", ".join(k for k, v in inputs.items() if not isinstance(v, list))
                raise CatalogueError(f"--set {node_spec}.{input_name}: {describe(node)} has no widget input '{input_name}' (it has: {widgets})")
            inputs[input_name] = value
    return prompt


def check_targets(prompt: dict, targets: dict[str, list[tuple[str, str]]]) -> None:
    """Every target is a widget input of a node of the API prompt (after conversion)."""
    for role, pairs in targets.items():
        for node_id, input_name in pairs:
            node = prompt.get(node_id)
            if node is None:
                raise CatalogueError(f"{role}: node #{node_id} is not in the workflow (or is muted/bypassed)")
            if input_name not in node["inputs"] or isinstance(node["inputs"][input_name], list):
                widgets = ", ".join(k for k, v in node["inputs"].items() if not isinstance(v, list))
                raise CatalogueError(f"{role}: node #{node_id} {node['class_type']} has no widget input '{input_name}' (it has: {widgets})")


def apply_job(prompt: dict, targets: dict[str, list[tuple[str, str]]], values: dict[str, object]) -> dict:
    """A copy of the API prompt with each role's value (None: keep the workflow's) written into its targets."""
    prompt = json.loads(json.dumps(prompt))
    for role, value in values.items():
        if value is None:
            continue
        for node_id, input_name in targets.get(role, []):
            prompt[node_id]["inputs"][input_name] = value
    return prompt


def workflow_digest(workflow: dict, targets: dict, sets: list, outputs: list[str] | None) -> str:
    """A hash of what decides a job's result besides its inputs: the graph and widget values, the map, the --set values.

    UI positions, sizes, colours and groups are left out, so moving a node in the editor does not change job ids.
    """
    if is_ui_format(workflow):
        graph = {
            "nodes": sorted(
                (
                    str(n["id"]),
                    n["type"],
                    n.get("mode", 0),
                    n.get("widgets_values"),
                    [(i.get("name"), i.get("link")) for i in n.get("inputs") or []],
                )
                for n in workflow["nodes"]
                if n["type"] not in ("Note", "MarkdownNote")
            ),
            "links": sorted(tuple(link) if isinstance(link, list) else tuple(sorted(link.items())) for link in workflow.get("links", [])),
        }
    else:
        graph = {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in sorted(workflow.items())}
    payload = {"graph": graph, "targets": targets, "sets": sets, "outputs": outputs or []}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
