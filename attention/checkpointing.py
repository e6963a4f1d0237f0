"""Gradient checkpointing that keeps block-keyed attention patches working (README, "Customise IDM-VTON on one photo pair").

ComfyUI's UNet passes one `transformer_options` dict through every block and rewrites its "block" and "block_index"
entries as it goes. A checkpointed layer is recomputed during backward, when that shared dict names the last block
run, so patches keyed by block (the garment reference attention, the IP attention) would look up the wrong block:
they are skipped in the recomputation, which then saves other tensors than the forward did (PyTorch's
`CheckpointError`) or trains another function. Here each checkpointed layer is called with a shallow copy of every
dict argument taken at call time, so its recomputation sees exactly what its forward saw; gradients equal the
un-checkpointed ones bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.utils.checkpoint


def _snapshot(value):
    return dict(value) if isinstance(value, dict) else value


def checkpointed_forward(forward):
    """`forward` run under non-reentrant checkpointing, with its dict arguments (transformer_options) copied at call time."""

    def call(*args, **kwargs):
        args = tuple(_snapshot(a) for a in args)
        kwargs = {name: _snapshot(value) for name, value in kwargs.items()}
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return call


def checkpointable_layers(blocks: Iterable[torch.nn.Module]) -> list[torch.nn.Module]:
    """The layers of ComfyUI UNet blocks (TimestepEmbedSequential: ResBlock, SpatialTransformer, Upsample...) to checkpoint."""
    return [layer for block in blocks for layer in block]


@contextlib.contextmanager
def gradient_checkpointing(layers: Iterable[torch.nn.Module], enabled: bool = True) -> Iterator[None]:
    """Checkpoints each layer's forward while inside (an instance attribute over the class's forward), then restores it.

    The layers are shared with every clone of the model: use it only around a training run (ComfyUI runs one prompt
    at a time); the `finally` restores them on an error or an interrupt too.
    """
    patched: list[torch.nn.Module] = []
    try:
        if enabled:
            for layer in layers:
                if "forward" in layer.__dict__:
                    raise RuntimeError(f"{type(layer).__name__} already has a patched forward; nested checkpointing is not supported")
                layer.forward = checkpointed_forward(layer.forward)
                patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.forward
