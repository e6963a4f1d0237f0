"""The pack's user-facing error: its message names the node input and the fix."""


class TryOnInputError(ValueError):
    """Raised for bad node inputs; ComfyUI shows the message and the server keeps running."""
