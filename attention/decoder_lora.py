"""A trainable LoRA on TryonNet's decoder (the UNet's `output_blocks`) and the file format ComfyUI's LoRA loaders read.

What is adapted (`target`):
- "all decoder layers": every weight of two or more dimensions in `output_blocks` (linear and convolution layers of the
  ResBlocks, the transformer blocks, their projections and the upsamplers); the paper fine-tunes the decoder;
- "decoder attention layers": the q/k/v/out projections of the self- and cross-attentions in `output_blocks`.
Never the encoder, the middle block, the IP-Adapter key/value projections or the Resampler (they live outside
`output_blocks`), and never GarmentNet (another model).

Training: each adapted layer gets a `LoRAWeight` in its `weight_function` list, the hook ComfyUI's own ops apply to
a layer's weight on every call (W + alpha/rank * up @ down), while `installed()` is open. The file holds, per layer,
`diffusion_model.<ComfyUI weight name>.lora_up.weight`, `.lora_down.weight` and `.alpha`: the generic LoRA format the
stock LoraLoaderModelOnly maps onto the model's own weight names (convolutions as up (out, r, 1, 1), down
(r, in, kh, kw)).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator

import torch

TARGETS = ("all decoder layers", "decoder attention layers")
DECODER_PREFIX = "output_blocks."
MODEL_PREFIX = "diffusion_model."  # the UNet's place in ComfyUI's model (BaseModel) state dict and in LoRA keys
_ATTENTION = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")


def decoder_layers(unet: torch.nn.Module, target: str) -> dict[str, torch.nn.Module]:
    """name (relative to the UNet) -> layer, in module order: the layers of `output_blocks` that `target` adapts."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    layers = {}
    for name, module in unet.named_modules():
        if not name.startswith(DECODER_PREFIX) or not hasattr(module, "weight_function"):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim < 2:
            continue
        if target == "decoder attention layers" and not _ATTENTION.search(name):
            continue
        layers[name] = module
    return layers


class LoRAWeight(torch.nn.Module):
    """W -> W + alpha/rank * up @ down for one layer; up (out, r) and down (r, in * kernel) stay in fp32."""

    def __init__(self, weight_shape: torch.Size, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.weight_shape = tuple(weight_shape)
        fan_in = math.prod(self.weight_shape[1:])
        bound = 1.0 / math.sqrt(fan_in)  # torch's default Linear init (kaiming uniform, a = sqrt(5)); up starts at zero
        down = (torch.rand(rank, fan_in, generator=generator, dtype=torch.float32) * 2 - 1) * bound
        self.down = torch.nn.Parameter(down)
        self.up = torch.nn.Parameter(torch.zeros(self.weight_shape[0], rank, dtype=torch.float32))
        self.rank = rank
        self.alpha = float(alpha)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = (self.up @ self.down).reshape(weight.shape) * (self.alpha / self.rank)
        return (weight + delta).to(weight.dtype)

    def file_tensors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(up, down) in the file's shapes: convolution LoRAs as (out, r, 1, 1) and (r, in, kh, kw)."""
        up, down = self.up.detach(), self.down.detach()
        if len(self.weight_shape) > 2:
            up = up.reshape(self.weight_shape[0], self.rank, *([1] * (len(self.weight_shape) - 2)))
            down = down.reshape(self.rank, *self.weight_shape[1:])
        return up.to(dtype).contiguous(), down.to(dtype).contiguous()


class DecoderLoRA:
    """The LoRA of every adapted decoder layer of one UNet, its parameters and its file state dict."""

    def __init__(self, layers: dict[str, torch.nn.Module], adapters: dict[str, LoRAWeight], target: str, rank: int, alpha: float):
        self.layers = layers
        self.adapters = adapters
        self.target = target
        self.rank = rank
        self.alpha = alpha

    @classmethod
    def create(cls, unet: torch.nn.Module, target: str, rank: int, seed: int, alpha: float | None = None) -> DecoderLoRA:
        """A fresh LoRA (delta zero) on the `target` layers of `unet`; the same seed gives the same initial weights.

        Call it outside inference mode (its parameters must be ordinary tensors). `alpha` defaults to `rank` (scale 1).
        """
        if rank < 1:
            raise ValueError("rank must be at least 1")
        alpha = float(rank if alpha is None else alpha)
        layers = decoder_layers(unet, target)
        if not layers:
            raise ValueError(f"the UNet has no {target} to adapt in output_blocks")
        generator = torch.Generator().manual_seed(int(seed) % (2**63))
        adapters = {name: LoRAWeight(layer.weight.shape, rank, alpha, generator) for name, layer in layers.items()}
        return cls(layers, adapters, target, rank, alpha)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for adapter in self.adapters.values() for p in (adapter.down, adapter.up)]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def to(self, device: torch.device) -> DecoderLoRA:
        for adapter in self.adapters.values():
            adapter.to(device)
        return self

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Adds each adapter to its layer's `weight_function` list while inside; the lists are restored on exit.

        The layers are shared by every clone of the model, so this is for the span of one training run only.
        """
        installed: list[tuple[torch.nn.Module, LoRAWeight, bool]] = []
        try:
            for name, layer in self.layers.items():
                adapter = self.adapters[name]
                had_own_list = "weight_function" in layer.__dict__  # else the class-wide empty default: never append to it
                layer.weight_function = list(layer.weight_function) + [adapter]
                installed.append((layer, adapter, had_own_list))
            yield
        finally:
            for layer, adapter, had_own_list in installed:
                remaining = [f for f in layer.weight_function if f is not adapter]
                if remaining or had_own_list:
                    layer.weight_function = remaining
                else:
                    del layer.weight_function

    def state_dict(self, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        """The LoRA file's tensors: `diffusion_model.<layer>.lora_up.weight` / `.lora_down.weight` / `.alpha`."""
        tensors = {}
        for name, adapter in self.adapters.items():
            up, down = adapter.file_tensors(dtype)
            key = MODEL_PREFIX + name
            tensors[f"{key}.lora_up.weight"] = up.cpu()
            tensors[f"{key}.lora_down.weight"] = down.cpu()
            tensors[f"{key}.alpha"] = torch.tensor(self.alpha, dtype=dtype)
        return tensors
