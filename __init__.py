"""ComfyUI virtual try-on node pack (IDM-VTON, OOTDiffusion), native to ComfyUI's model management.

ComfyUI loads the pack through `comfy_entrypoint` (the V3 node API): the extension lists every node class of
`nodes/` (their schemas hold the public node ids). WEB_DIRECTORY serves the per-node help pages.
"""

from comfy_api.latest import ComfyExtension, io

from .model_folders import register_model_folders

register_model_folders()  # before the nodes: their schemas list the files of these folders

from .nodes import NODE_LIST  # noqa: E402

WEB_DIRECTORY = "./web"  # web/docs/<NodeId>.md: the per-node help pages shown in ComfyUI's node documentation panel


class TryOnExtension(ComfyExtension):
    """The pack's nodes, for ComfyUI's V3 loader."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_LIST)


async def comfy_entrypoint() -> TryOnExtension:
    return TryOnExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
