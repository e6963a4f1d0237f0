"""The one check every loader of the pack runs on a weights file before it builds a network from it.

A file with a tensor missing would load into a network whose missing weight is whatever memory held (ComfyUI builds
its layers without initialising them, then loads with `strict=False`), so one seed would give different images on
different loads; a tensor of the wrong shape would end in PyTorch's raw `size mismatch`; integer or NaN weights would
load and give black images. `check_state_dict` refuses all of these before anything is built, with a message that
names the node input, the file, what is wrong (missing and unexpected keys named a few at a time) and the fix.

The expected key set and shapes come from the network itself: `meta_module` builds it on PyTorch's meta device (no
memory, no values; about 0.1 s for the real TryonNet) and its state dict is read; `comfy_model_shapes` does that for
a ComfyUI model config, so the check follows whatever width and depth the file's config describes.

Values: every tensor must be floating point and finite. The finiteness check is one `torch.aminmax` per tensor (NaN
propagates to both ends, an infinity shows at one end), reading each tensor once without a copy: measured 0.06 s per GiB
of fp16 weights in RAM (740 SDXL-sized tensors, one thread of a 2-core CPU), so about 0.35 s for TryonNet's 3.0 G fp16
parameters (5.6 GiB), less than copying them into the model. float8 tensors (no `aminmax` on the CPU) are widened to fp16 in
16 M-value chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from ..errors import TryOnInputError

SHOWN = 3  # keys named per problem; the count says how many more there are
CHUNK = 1 << 24  # values per chunk when a dtype has to be widened first
UNET_PREFIX = "diffusion_model."


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """Which file a check is about, for its messages: the node input that chose it, the file's name, and the fix.

    `file_keys` maps a checked key to the key's name in the file, and `file_prefixes` a checked key's prefix to the
    file's, when a loader renamed the keys before the check (e.g. diffusers -> ComfyUI UNet names), so messages quote
    the names the user's file has.
    """

    input_name: str
    file_name: str
    fix: str = "Download it again."
    file_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    file_prefixes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def error(self, problem: str) -> TryOnInputError:
        return TryOnInputError(f"{self.input_name}: {self.file_name} {problem}. {self.fix}")

    def shown(self, keys: Iterable[str]) -> str:
        """The first few keys in the file's naming, and how many more there are."""
        keys = list(keys)
        names = ", ".join(self.name_in_file(k) for k in keys[:SHOWN])
        return names + (f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")

    def name_in_file(self, key: str) -> str:
        if key in self.file_keys:
            return self.file_keys[key]
        for prefix, file_prefix in self.file_prefixes.items():
            if key.startswith(prefix):
                return file_prefix + key[len(prefix) :]
        return key


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    expected: Mapping[str, Sequence[int]],
    source: WeightsFile,
    ignored: Callable[[str], bool] = lambda key: False,
) -> None:
    """Refuses `state_dict` unless its keys are exactly `expected`'s (keys for which `ignored` is true may be present or
    not), every shape matches, and every tensor that will be loaded is floating point and finite."""
    missing = [k for k in expected if k not in state_dict and not ignored(k)]
    unexpected = [k for k in state_dict if k not in expected and not ignored(k)]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing ({source.shown(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) ({source.shown(unexpected)})")
        raise source.error(f"is incomplete, damaged or of another network: {' and '.join(parts)}")
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])]
    if wrong:
        first = wrong[0]
        detail = f"{source.name_in_file(first)} is {tuple(state_dict[first].shape)} where the network needs {tuple(expected[first])}"
        if len(wrong) > 1:
            detail = f"{len(wrong)} tensors: {source.shown(wrong)}; e.g. {detail}"
        raise source.error(f"has tensors of the wrong shape ({detail})")
    check_tensor_values(((k, state_dict[k]) for k in expected if k in state_dict), source)


def check_tensor_values(named_tensors: Iterable[tuple[str, torch.Tensor]], source: WeightsFile) -> None:
    """Every tensor floating point and finite (see the module docstring for the cost)."""
    not_float, not_finite = [], []
    for key, tensor in named_tensors:
        if not tensor.is_floating_point():
            not_float.append((key, tensor.dtype))
        elif not is_finite(tensor):
            not_finite.append(key)
    if not_float:
        raise source.error(
            f"holds {str(not_float[0][1]).removeprefix('torch.')} values in {len(not_float)} tensor(s) ({source.shown(k for k, _ in not_float)}), "
            "not floating-point weights: the file is damaged or not a weights file"
        )
    if not_finite:
        raise source.error(f"holds NaN or infinite values in {len(not_finite)} tensor(s) ({source.shown(not_finite)}): the file is damaged")


def is_finite(tensor: torch.Tensor) -> bool:
    """True when no value of a floating tensor is NaN or infinite (one pass, no copy for the usual dtypes)."""
    if tensor.numel() == 0:
        return True
    flat = tensor.detach().reshape(-1)
    if flat.element_size() == 1:  # float8: the CPU has no aminmax for it
        chunks = (chunk.to(torch.float16) for chunk in flat.split(CHUNK))
    else:
        chunks = (flat,)
    for chunk in chunks:
        low, high = torch.aminmax(chunk)
        if not (torch.isfinite(low) and torch.isfinite(high)):
            return False
    return True


def meta_module(build: Callable[[], torch.nn.Module], source: WeightsFile) -> torch.nn.Module:
    """The network `build` makes, built on the meta device (no memory, no values), to read its keys and shapes.

    `build` sizes the network from the file (its config or its tensors' shapes); when the file's tensors do not even
    describe a buildable network, that is the file's fault and is said so.
    """
    try:
        with torch.device("meta"):
            return build()
    except TryOnInputError:
        raise
    except KeyError as error:  # a tensor the network's sizes are read from is missing
        raise source.error(f"does not describe a complete network: it lacks the tensor {error.args[0]!r}") from error
    except Exception as error:  # inconsistent sizes
        raise source.error(f"does not describe a complete network ({type(error).__name__}: {error})") from error


def comfy_model_shapes(model_config, weights: Mapping[str, torch.Tensor], source: WeightsFile) -> dict[str, torch.Size]:
    """What a ComfyUI model config's `get_model` + `load_model_weights` expects: the UNet's state dict (keys without
    `diffusion_model.`) and the parameters of any other module the model adds (e.g. TryonNet's IP-Adapter); the noise
    schedule buffers are computed, not loaded."""
    model = meta_module(lambda: model_config.get_model(dict(weights), "", device=torch.device("meta")), source)
    parameters = {name for name, _ in model.named_parameters()}
    return {
        key[len(UNET_PREFIX) :] if key.startswith(UNET_PREFIX) else key: value.shape
        for key, value in model.state_dict().items()
        if key.startswith(UNET_PREFIX) or key in parameters
    }


def check_comfy_model_weights(model_config, weights: Mapping[str, torch.Tensor], source: WeightsFile) -> None:
    """`check_state_dict` against what `model_config`'s model loads (see `comfy_model_shapes`)."""
    check_state_dict(weights, comfy_model_shapes(model_config, weights, source), source)
