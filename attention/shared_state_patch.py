"""Base for the ComfyUI patch objects of one patched MODEL: extra models to load, clone sharing."""

from __future__ import annotations


class SharedStatePatch:
    """`.models()` lets load_models_gpu load the reference UNet with the denoiser; clones share (never copy) the patch.

    `owner` is the object the patch reads at sampling time (a feature bank); it answers `.models()`.
    """

    def __init__(self, owner):
        self.owner = owner

    def models(self):
        return self.owner.models()

    def to(self, device_or_dtype):
        return self

    def __deepcopy__(self, memo):
        return self
