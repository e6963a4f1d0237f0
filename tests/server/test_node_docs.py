"""Per-node help pages (web/docs/<NodeId>.md, ComfyUI's node-docs convention): present, in step with the code, served.

The pages are checked against the live node classes, so adding, renaming or re-defaulting an input or output without
updating its page fails here. The server test fetches each page the way ComfyUI's frontend does: the pack name comes
from the node's `python_module` in /object_info, then `/extensions/<pack>/docs/<NodeId>.md`.
"""

from __future__ import annotations

import pathlib
import re
import urllib.error

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[2] / "web" / "docs"
PACK_FOLDER = "comfyui-tryon"  # the pack's folder name in custom_nodes/ (the test server links it there)
DYNAMIC_DEFAULTS = {("TryOnAgnosticMask", "pose_model")}  # default = the first OpenPose file found: described, not named


def page(node_id: str) -> str:
    return (DOCS / f"{node_id}.md").read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """The body of a `## title` section of a page (up to the next `## ` heading)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def table_row(body: str, name: str) -> str | None:
    """The table row whose first cell is `name` in backticks (optionally followed by '(optional)')."""
    for line in body.splitlines():
        if re.match(rf"^\| `{re.escape(name)}`( \(optional\))? \|", line):
            return line
    return None


def inputs_of(node) -> dict[str, tuple[bool, tuple]]:
    """name -> (required, spec) over INPUT_TYPES()'s required and optional inputs."""
    types = node.INPUT_TYPES()
    found = {name: (True, spec) for name, spec in types.get("required", {}).items()}
    found.update({name: (False, spec) for name, spec in types.get("optional", {}).items()})
    return found


def outputs_of(node) -> tuple[str, ...]:
    return tuple(getattr(node, "RETURN_NAMES", None) or node.RETURN_TYPES)


def expected_default(value) -> str:
    """How a default is written in the Inputs table's default cell."""
    return "empty" if value == "" else f"`{value}`"


def test_every_node_has_a_page_and_every_page_a_node(pack):
    ids = set(pack.nodes.NODE_CLASS_MAPPINGS)
    pages = {path.stem for path in DOCS.glob("*.md")}
    assert ids, "the pack registers no nodes"
    assert sorted(ids - pages) == [], "nodes without a web/docs/<NodeId>.md page"
    assert sorted(pages - ids) == [], "pages for node ids the pack does not register (renamed or removed nodes)"


def test_page_title_is_the_display_name(pack):
    for node_id, display in pack.nodes.NODE_DISPLAY_NAME_MAPPINGS.items():
        first_line = page(node_id).splitlines()[0]
        assert first_line == f"# {display}", f"{node_id}: first line {first_line!r}"


def test_every_input_has_a_row_with_its_default_and_optionality(pack):
    problems = []
    for node_id, node in pack.nodes.NODE_CLASS_MAPPINGS.items():
        body = section(page(node_id), "Inputs")
        for name, (required, spec) in inputs_of(node).items():
            row = table_row(body, name)
            if row is None:
                problems.append(f"{node_id}.{name}: no Inputs row")
                continue
            if ("(optional)" in row.split("|")[1]) == required:
                problems.append(f"{node_id}.{name}: {'required' if required else 'optional'} in the code, not on the page")
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if "default" in options and (node_id, name) not in DYNAMIC_DEFAULTS:
                cells = [cell.strip() for cell in row.strip("|").split("|")]
                if len(cells) < 4 or cells[2] != expected_default(options["default"]):
                    problems.append(f"{node_id}.{name}: default cell should be {expected_default(options['default'])}, row: {row}")
    assert problems == []


def test_every_output_has_a_row(pack):
    problems = []
    for node_id, node in pack.nodes.NODE_CLASS_MAPPINGS.items():
        body = section(page(node_id), "Outputs")
        for index, name in enumerate(outputs_of(node)):
            row = table_row(body, name)
            if row is None:
                problems.append(f"{node_id}: output {name} has no Outputs row")
            elif f"| {node.RETURN_TYPES[index]} |" not in row:
                problems.append(f"{node_id}: output {name} row does not give its type {node.RETURN_TYPES[index]}: {row}")
        rows = [line for line in body.splitlines() if line.startswith("| `")]
        if len(rows) != len(outputs_of(node)):
            problems.append(f"{node_id}: {len(rows)} output rows for {len(outputs_of(node))} outputs")
    assert problems == []


def test_no_input_row_for_an_input_the_node_does_not_have(pack):
    problems = []
    for node_id, node in pack.nodes.NODE_CLASS_MAPPINGS.items():
        names = set(inputs_of(node))
        for line in section(page(node_id), "Inputs").splitlines():
            match = re.match(r"^\| `([^`]+)`", line)
            if match and match.group(1) not in names:
                problems.append(f"{node_id}: page documents '{match.group(1)}', which is not an input")
    assert problems == []


def test_idm_vton_pages_carry_the_weights_licence(pack):
    for node_id in pack.nodes.NODE_CLASS_MAPPINGS:
        if node_id.startswith("IDMVTON"):
            assert "CC BY-NC-SA 4.0" in page(node_id) and "non-commercial" in page(node_id), node_id


def test_server_serves_each_page_where_the_frontend_looks(server):
    object_info = server.get_json("/object_info")
    local_ids = sorted(path.stem for path in DOCS.glob("*.md"))
    assert local_ids
    for node_id in local_ids:
        assert node_id in object_info, f"{node_id} is not registered in the server"
        module = object_info[node_id]["python_module"]
        parts = module.split(".")  # the frontend: custom_nodes.<pack>[@version] -> /extensions/<pack>/docs/
        assert len(parts) >= 2 and parts[0] == "custom_nodes", module
        pack_name = parts[1].split("@")[0]
        assert pack_name == PACK_FOLDER
        served = server.get_bytes(f"/extensions/{pack_name}/docs/{node_id}.md").decode("utf-8")
        assert served == page(node_id)


def test_server_404s_for_a_page_that_does_not_exist(server):
    with pytest.raises(urllib.error.HTTPError) as error:
        server.get_bytes(f"/extensions/{PACK_FOLDER}/docs/NoSuchTryOnNode.md")
    assert error.value.code == 404
