"""Base for ComfyUI patch objects that read one TryOnState: model loading, device moves, clone sharing."""

from __future__ import annotations


class SharedStatePatch:
    """`.models()` lets load_models_gpu load GarmentNet with TryonNet; clones share (never copy) the state."""

    def __init__(self, state):
        self.state = state

    def models(self):
        return self.state.models()

    def to(self, device_or_dtype):
        self.state.to(device_or_dtype)
        return self

    def __deepcopy__(self, memo):
        return self
