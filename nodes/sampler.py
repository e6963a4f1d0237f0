"""A KSampler with IDM-VTON's defaults (30 steps, cfg 2.0, DDPM), and the original's leading timestep schedule as an option."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..pipeline.idm_vton_sampling import LEADING, SCHEDULERS, sample_tryon
from ..preprocess.settings import check_finite
from .float_settings import validate_floats


class IDMVTONSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IDMVTONSampler",
            display_name="IDM-VTON Sampler",
            category="try-on/IDM-VTON",
            description=(
                "Samples the try-on with IDM-VTON's defaults: 30 steps, cfg 2.0, ddpm + ddim_uniform, the same latent as the stock KSampler "
                f"with these settings. The scheduler '{LEADING}' follows the original's timesteps exactly at every step count (ddim_uniform "
                "equals them at 2, 4, 20, 25 and 50 steps, but runs 31 steps from t=991 where the original runs 30 from t=958)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of 'IDM-VTON Apply'."),
                io.Conditioning.Input("positive", tooltip="The positive output of 'IDM-VTON Apply'."),
                io.Conditioning.Input("negative", tooltip="The negative output of 'IDM-VTON Apply'."),
                io.Latent.Input("latent_image", tooltip="The LATENT output of 'IDM-VTON Apply'."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True, tooltip="Noise seed (the original demo uses 42)."),
                io.Int.Input("steps", default=30, min=1, max=1000, tooltip="Denoising steps (original: 30)."),
                io.Float.Input(
                    "cfg",
                    default=2.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Classifier-free guidance (original: 2.0). 1.0 skips the unconditional pass.",
                ),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="ddpm", tooltip="Any ComfyUI sampler."),
                io.Combo.Input(
                    "scheduler",
                    options=SCHEDULERS,
                    default="ddim_uniform",
                    tooltip=f"Any ComfyUI scheduler, or '{LEADING}': the original's DDPM timesteps (stride 1000 // steps, offset 1).",
                ),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def validate_inputs(cls, sampler_name: str | None = None, scheduler: str | None = None, cfg: float | None = None) -> bool | str:
        """Unknown names are refused before the prompt runs (ComfyUI 0.3.75 does not check V3 combo values itself), and so
        is a NaN, infinite or out-of-range cfg (a linked cfg is checked when the node runs)."""
        choices = {"sampler_name": (sampler_name, comfy.samplers.KSampler.SAMPLERS), "scheduler": (scheduler, SCHEDULERS)}
        for name, (value, known) in choices.items():
            if value is not None and value not in known:  # None: the value comes from a link, known only at run time
                return f"{name}: {value!r} is not one of ComfyUI's {name.split('_')[0]}s ({', '.join(known)})."
        return validate_floats(cls, cfg=cfg)

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str) -> io.NodeOutput:
        check_finite(cfg=cfg)
        return io.NodeOutput(sample_tryon(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image))


NODES = [IDMVTONSampler]
