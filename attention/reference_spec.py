"""What a model family decides about reference attention, as plain immutable data (docs/idm_vton.md, "GarmentNet and reference attention").

Reference attention: a second ("reference") UNet runs on the garment; in chosen transformer blocks one of its
tensors is captured, and the denoiser's self-attention (attn1) attends over its own tokens plus those features
(queries from its own tokens only). The families differ only in the parameters below:

| | IDM-VTON | OOTDiffusion |
|---|---|---|
| `capture` | `NORM1_OUTPUT`: the reference UNet's own norm1 output | `BLOCK_INPUT`: raw block input, normalised once by the denoiser's norm1 |
| `uncond` | `ZERO_TOKENS`: M zero tokens (exactly one biased key) | `FEATURES_OF_ZERO_LATENT`: the reference UNet's features of an all-zero latent |
| `timing` | `EveryStep()`: at each step's timestep | `OncePerRun(timestep=0.0)` |

IDM-VTON's optional garment feature cache is `OncePerRun(schedule_step="first_step" | "mid_schedule")`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

FeatureKey = tuple[str, int, int]  # ComfyUI (block_name, block_number, block_index) of a transformer block


class CapturePoint(str, enum.Enum):
    """Which tensor of a reference-UNet transformer block is captured."""

    NORM1_OUTPUT = "norm1_output"  # the reference block's own norm1 output (the input of its attn1), injected as is
    BLOCK_INPUT = "block_input"  # the block's input before norm1; the denoiser's norm1 of that block normalises it once per fill


class UncondReference(str, enum.Enum):
    """What the unconditional CFG chunks attend to besides their own tokens."""

    ZERO_TOKENS = "zero_tokens"  # M zero tokens: logit 0 each, value to_v(0); they take softmax mass and must stay
    FEATURES_OF_ZERO_LATENT = "features_of_zero_latent"  # the reference UNet run on an all-zero latent (same context and timestep)


@dataclass(frozen=True)
class EveryStep:
    """The reference UNet runs at every model evaluation, at its timestep; the features are freed when the step ends."""

    def run_timestep(self, model_sampling, sigmas: torch.Tensor) -> float | None:
        return None


SCHEDULE_STEPS = ("first_step", "mid_schedule")


@dataclass(frozen=True)
class OncePerRun:
    """The reference UNet runs once per sampling run, at one timestep, and every step reuses its features.

    Either a fixed model timestep (`timestep`, e.g. OOTDiffusion's 0) or the timestep of one step of the run's
    schedule (`schedule_step`: "first_step" or "mid_schedule"). Outside a sampling run (a bare model call) a fixed
    timestep still applies, a schedule step falls back to the call's own timestep.
    """

    timestep: float | None = None
    schedule_step: str | None = None

    def __post_init__(self):
        if (self.timestep is None) == (self.schedule_step is None):
            raise ValueError("OncePerRun: give exactly one of timestep or schedule_step")
        if self.schedule_step is not None and self.schedule_step not in SCHEDULE_STEPS:
            raise ValueError(f"OncePerRun: schedule_step must be one of {SCHEDULE_STEPS}, not {self.schedule_step!r}")

    def run_timestep(self, model_sampling, sigmas: torch.Tensor) -> float:
        if self.timestep is not None:
            return float(self.timestep)
        steps = max(int((sigmas > 0).sum()), 1)
        index = 0 if self.schedule_step == "first_step" else steps // 2
        return float(model_sampling.timestep(sigmas[index].reshape(1)).reshape(-1)[0])


ReferenceTiming = EveryStep | OncePerRun


@dataclass(frozen=True)
class ReferenceSpec:
    """A model family's reference attention: which blocks, which tensor, what uncond sees, when the reference UNet runs.

    `blocks`: the denoiser's transformer blocks that receive features; the reference UNet has the same keys.
    `strength`: multiplies every injected reference token (1.0 = the original).
    """

    blocks: tuple[FeatureKey, ...]
    capture: CapturePoint
    uncond: UncondReference
    timing: ReferenceTiming
    strength: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(tuple(key) for key in self.blocks))
        object.__setattr__(self, "capture", CapturePoint(self.capture))
        object.__setattr__(self, "uncond", UncondReference(self.uncond))


@dataclass(frozen=True, eq=False)
class ReferenceInputs:
    """What the reference UNet is run on: a ModelPatcher (loaded together with the denoiser), its latent and context.

    `latent` (1 or B, C, h, w) serves the cond chunks; with `UncondReference.FEATURES_OF_ZERO_LATENT` the uncond
    chunks get the features of an all-zero latent with each pair's own context (one zero latent per context row). `context` is (1 or B, T, D).
    """

    model: object
    latent: torch.Tensor
    context: torch.Tensor
