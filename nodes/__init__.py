"""Node registry: every node class of the pack, by its public (never renamed) id.

Each node module declares `NODES = {node_id: (NodeClass, "Display name")}`; this file only collects them.
"""

from . import apply, caption, densepose, image_fit, mask, model_loaders, person_crop, sampler

_MODULES = (model_loaders, apply, sampler, image_fit, mask, person_crop, densepose, caption)

NODE_CLASS_MAPPINGS = {node_id: node for module in _MODULES for node_id, (node, _) in module.NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: display for module in _MODULES for node_id, (_, display) in module.NODES.items()}
