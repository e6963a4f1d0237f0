"""The pack's public node API (node ids, input names and types, output names and types) and its committed list.

Node ids and input names are what saved workflows refer to: a rename or removal breaks them. tests/data/node_api.json
holds the list; tests/server/test_node_api.py checks that a running server's /object_info matches it exactly, so
renames and removals fail, and additions must be added to the list on purpose.

    .venv/bin/python tests/support/node_api.py            # show the differences against the committed list
    .venv/bin/python tests/support/node_api.py --update   # regenerate tests/data/node_api.json from a fresh server
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import comfy_host  # noqa: E402

API_FILE = pathlib.Path(__file__).resolve().parents[1] / "data" / "node_api.json"
UPDATE_HINT = (
    "If the change is deliberate (a new node or input), run `.venv/bin/python tests/support/node_api.py --update` and commit "
    "tests/data/node_api.json. Never rename or remove a published node id or input: keep the old one working instead."
)


def pack_node_ids() -> list[str]:
    """Every node id the pack registers (its NODE_CLASS_MAPPINGS)."""
    comfy_host.prepare_in_process()
    return sorted(comfy_host.import_pack().nodes.NODE_CLASS_MAPPINGS)


def input_type(spec) -> str:
    """An input's type as saved workflows see it: combos (a list of choices, or 'COMBO') are 'COMBO'."""
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return "COMBO" if isinstance(kind, (list, tuple)) else str(kind)


def node_api(object_info: dict, node_ids: list[str]) -> dict:
    """id -> required/optional {input name: type}, outputs ["name: TYPE", ...] in order (missing ids map to None)."""
    api = {}
    for node_id in node_ids:
        info = object_info.get(node_id)
        if info is None:
            api[node_id] = None
            continue
        inputs = info.get("input", {})
        api[node_id] = {
            "required": {name: input_type(spec) for name, spec in inputs.get("required", {}).items()},
            "optional": {name: input_type(spec) for name, spec in inputs.get("optional", {}).items()},
            "outputs": [f"{name}: {kind}" for kind, name in zip(info.get("output", []), info.get("output_name", []), strict=True)],
        }
    return api


def differences(committed: dict, current: dict) -> list[str]:
    """Human-readable differences; empty when the current API matches the committed list."""
    found = []
    for node_id in sorted(set(committed) | set(current)):
        old, new = committed.get(node_id), current.get(node_id)
        if node_id not in current or new is None:
            found.append(f"node id {node_id!r} was removed or renamed (or failed to load): saved workflows using it break.")
            continue
        if node_id not in committed:
            found.append(f"node id {node_id!r} is new and not in tests/data/node_api.json.")
            continue
        for section in ("required", "optional"):
            for name in sorted(set(old[section]) | set(new[section])):
                if name not in new[section]:
                    found.append(f"{node_id}: {section} input {name!r} was removed or renamed: saved workflows lose its value.")
                elif name not in old[section]:
                    found.append(f"{node_id}: {section} input {name!r} is new and not in tests/data/node_api.json.")
                elif old[section][name] != new[section][name]:
                    found.append(f"{node_id}: input {name!r} changed type {old[section][name]} -> {new[section][name]}.")
        if old["outputs"] != new["outputs"]:
            found.append(f"{node_id}: outputs changed {old['outputs']} -> {new['outputs']}: links in saved workflows move or break.")
    return found


def committed_api() -> dict:
    return json.loads(API_FILE.read_text())


def fresh_object_info() -> dict:
    """/object_info of a fresh server with this pack (no model folders needed: only names and types are read)."""
    with tempfile.TemporaryDirectory() as workdir:
        host = comfy_host.ComfyServer(pathlib.Path(workdir), None)
        try:
            host.wait_ready()
            return host.get_json("/object_info")
        finally:
            host.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="rewrite tests/data/node_api.json from the current nodes")
    args = parser.parse_args()
    current = node_api(fresh_object_info(), pack_node_ids())
    broken = [node_id for node_id, api in current.items() if api is None]
    if broken:
        print(f"these node ids did not load in the server: {broken}", file=sys.stderr)
        return 1
    if args.update:
        API_FILE.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        print(f"wrote {API_FILE} ({len(current)} nodes)")
        return 0
    found = differences(committed_api(), current) if API_FILE.exists() else ["tests/data/node_api.json does not exist yet."]
    print("\n".join(found) if found else "node API matches tests/data/node_api.json")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
