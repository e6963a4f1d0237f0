"""Node registry: every V3 node class of the pack; each module declares `NODES = [NodeClass, ...]`.

The ids live in the schemas and are a public API (saved workflows refer to them): never rename one.
"""

from __future__ import annotations

from . import apply, caption, customise, densepose, image_fit, mask, model_loaders, ootd, person_crop, sampler

_MODULES = (model_loaders, apply, sampler, image_fit, mask, person_crop, densepose, caption, ootd, customise)

NODE_LIST = [node for module in _MODULES for node in module.NODES]
NODE_CLASS_MAPPINGS = {node.GET_SCHEMA().node_id: node for node in NODE_LIST}
NODE_DISPLAY_NAME_MAPPINGS = {node.GET_SCHEMA().node_id: node.GET_SCHEMA().display_name for node in NODE_LIST}
