"""A KSampler with IDM-VTON's defaults (30 steps, cfg 2.0, DDPM over leading timesteps)."""

from __future__ import annotations

import comfy.samplers

import nodes as comfy_nodes


class IDMVTONSampler:
    DESCRIPTION = (
        "Samples the try-on with IDM-VTON's defaults: 30 steps, cfg 2.0, ddpm + ddim_uniform "
        "(= the original's leading timesteps). Gives the same latent as the stock KSampler with these settings."
    )
    CATEGORY = "try-on/IDM-VTON"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The MODEL output of 'IDM-VTON Apply'."}),
                "positive": ("CONDITIONING", {"tooltip": "The positive output of 'IDM-VTON Apply'."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative output of 'IDM-VTON Apply'."}),
                "latent_image": ("LATENT", {"tooltip": "The LATENT output of 'IDM-VTON Apply'."}),
                "seed": (
                    "INT",
                    {"default": 42, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Noise seed (the original demo uses 42)."},
                ),
                "steps": ("INT", {"default": 30, "min": 1, "max": 1000, "tooltip": "Denoising steps (original: 30)."}),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 2.0,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Classifier-free guidance (original: 2.0). 1.0 skips the unconditional pass.",
                    },
                ),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "ddpm", "tooltip": "Any ComfyUI sampler."}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "ddim_uniform", "tooltip": "Any ComfyUI scheduler."}),
            }
        }

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler):
        return comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image)


NODES = {"IDMVTONSampler": (IDMVTONSampler, "IDM-VTON Sampler")}
