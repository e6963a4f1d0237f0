"""ComfyUI virtual try-on node pack (IDM-VTON), native to ComfyUI's model management."""

from .model_folders import register_model_folders

register_model_folders()  # before the nodes: their schemas list the files of these folders

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"  # web/docs/<NodeId>.md: the per-node help pages shown in ComfyUI's node documentation panel

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
