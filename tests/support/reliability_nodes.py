"""Test-only ComfyUI nodes for the reliability server (loaded as a custom node from a temporary folder; never in the pack).

- `TryOnTestTensorImage` / `TryOnTestTensorMask`: an IMAGE/MASK tensor read from a .safetensors file in the input
  folder, so tests can feed what no stock loader produces (1-channel images, NaN/Inf, exact batches).
- `TryOnTestStateProbe`: reports, from inside the server process, every live TryOnState (feature bank size, step
  depth, cache timestep), so a test can check that nothing is left over after a run or an interrupt.
- A second tiny CLIP vision model (width 48, 4 layers: a stand-in for a CLIP-L file where ViT-H is needed),
  registered with ComfyUI's CLIP vision loader the same way tests/comfy_host.register_tiny_models does it.
"""

from __future__ import annotations

import gc
import json
import os
import pathlib

import safetensors.torch

OTHER_VISION_WIDTH, OTHER_VISION_LAYERS = 48, 4


def other_vision_config() -> dict:
    """ComfyUI ClipVisionModel config of the second tiny vision model (see fixtures in reliability_host)."""
    return {
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": OTHER_VISION_WIDTH,
        "image_size": 224,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 96,
        "layer_norm_eps": 1e-5,
        "model_type": "clip_vision_model",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": OTHER_VISION_LAYERS,
        "patch_size": 14,
        "projection_dim": 32,
        "torch_dtype": "float32",
    }


def register_other_vision() -> None:
    """Lets the stock CLIPVisionLoader build the width-48 vision file (chained before the harness's own detection)."""
    import comfy.clip_vision

    if getattr(comfy.clip_vision.load_clipvision_from_sd, "tryon_other_vision", False):
        return
    config_path = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"tiny_clip_vision_w48_{os.getpid()}.json"
    config_path.write_text(json.dumps(other_vision_config()))
    previous = comfy.clip_vision.load_clipvision_from_sd

    def load_clipvision_from_sd(sd, prefix="", convert_keys=False):
        last = f"vision_model.encoder.layers.{OTHER_VISION_LAYERS - 1}.layer_norm1.weight"
        beyond = f"vision_model.encoder.layers.{OTHER_VISION_LAYERS}.layer_norm1.weight"
        if last in sd and beyond not in sd and sd[last].shape[0] == OTHER_VISION_WIDTH:
            clip = comfy.clip_vision.ClipVisionModel(str(config_path))
            clip.load_sd(sd)
            return clip
        return previous(sd, prefix, convert_keys)

    load_clipvision_from_sd.tryon_other_vision = True
    comfy.clip_vision.load_clipvision_from_sd = load_clipvision_from_sd


def _read_tensor(name: str):
    import folder_paths

    path = os.path.join(folder_paths.get_input_directory(), name)
    return safetensors.torch.load_file(path)["tensor"]


class TryOnTestTensorImage:
    CATEGORY = "testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "", "tooltip": "A .safetensors file in the input folder (key 'tensor')."})}}

    def load(self, name: str):
        return (_read_tensor(name),)


class TryOnTestTensorMask(TryOnTestTensorImage):
    RETURN_TYPES = ("MASK",)


class TryOnTestStateProbe:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"token": ("STRING", {"default": "", "tooltip": "Any text (a new one forces a new report)."})}}

    @classmethod
    def IS_CHANGED(cls, token: str):
        return float("nan")

    def probe(self, token: str):
        gc.collect()
        banks = [
            o
            for o in gc.get_objects()
            if type(o).__name__ == "ReferenceFeatureBank" and type(o).__module__.endswith("attention.reference_bank") and o.node_name == "IDM-VTON Apply"
        ]
        live = [bank.live_state() for bank in banks]
        report = {
            "states": len(banks),
            "bank_tensors": sum(s["feature_tensors"] for s in live),
            "step_depth": sum(s["step_depth"] for s in live),
            "cache_timesteps": sum(s["run_timestep_set"] for s in live),
        }
        return {"ui": {"text": [json.dumps(report)]}}


register_other_vision()

NODE_CLASS_MAPPINGS = {
    "TryOnTestTensorImage": TryOnTestTensorImage,
    "TryOnTestTensorMask": TryOnTestTensorMask,
    "TryOnTestStateProbe": TryOnTestStateProbe,
}
NODE_DISPLAY_NAME_MAPPINGS = {key: key for key in NODE_CLASS_MAPPINGS}
