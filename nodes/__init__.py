"""Node registry: every node class of the pack, by its public (never renamed) id.

Each node module declares `NODES`: a list of V3 `io.ComfyNode` classes (their schema holds the id and display name),
or, while a module is not yet moved to V3, a dict {node_id: (NodeClass, "Display name")}. This file only collects them.
"""

from __future__ import annotations

from . import apply, caption, densepose, image_fit, mask, model_loaders, person_crop, sampler

_MODULES = (model_loaders, apply, sampler, image_fit, mask, person_crop, densepose, caption)


def _entries():
    for module in _MODULES:
        if isinstance(module.NODES, dict):
            for node_id, (node, display) in module.NODES.items():
                yield node_id, node, display
        else:
            for node in module.NODES:
                schema = node.GET_SCHEMA()
                yield schema.node_id, node, schema.display_name


NODE_LIST = [node for _, node, _ in _entries()]
NODE_CLASS_MAPPINGS = {node_id: node for node_id, node, _ in _entries()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: display for node_id, _, display in _entries()}
