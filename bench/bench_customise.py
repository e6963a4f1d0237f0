"""Benchmark: IDM-VTON Customise's training step with and without gradient checkpointing (time and peak memory).

One process times both settings, alternating over `--reps` runs of `--steps` training steps each (the first step of
every run is a warm-up and not counted); the medians of the wall-clock and process-CPU time per step are printed with
their ratio (checkpointing / none). Memory: each setting trains once more in its own subprocess; on CPU the peak RSS
while training, polled every 2 ms, minus the RSS before (weights loaded); on CUDA `torch.cuda.max_memory_allocated`
over the training run (weights included) and the same minus the allocation before training. Random weights of the
real IDM-VTON configs at reduced widths (bench/bench_models.py), the real depths (70 transformer blocks per UNet),
TryonNet + GarmentNet + IP-Adapter as IDM-VTON Apply patches them, the LoRA on all decoder layers.

    .venv/bin/python bench/bench_customise.py                          # CPU, cpu-mid (widths 64/128/192, latent 64x48), fp32
    .venv/bin/python bench/bench_customise.py --config cpu-real-latent  # the real 128x96 latent
    python bench/bench_customise.py --config gpu-real --device cuda --dtype bf16   # real SDXL sizes
"""

from __future__ import annotations

import argparse
import gc
import json
import pathlib
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests" / "support"), str(HERE)]

from run_bench import PeakRSS, clocks, memory_child, setup_comfy  # noqa: E402  (shared with the IDM-VTON benchmark)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu-mid", help="a bench_models.CONFIGS name (widths and latent size)")
    parser.add_argument("--steps", type=int, default=4, help="training steps per run (the first is a warm-up)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--target", default="all decoder layers")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="weight dtype (fp16 trains in bf16 where supported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", choices=["on", "off"], default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class Bench:
    """A TryonNet patched as IDM-VTON Apply does, on random inputs, and the training pair built from it."""

    def __init__(self, args):
        import torch
        from bench_models import CONFIGS, make_inputs, reference_unets
        from comfyui_tryon.attention.tryon_patch import TryOnState, patch_tryon_model, tryon_bank, wanted_feature_keys
        from comfyui_tryon.models.garment_net import build_garment_model
        from comfyui_tryon.models.tryon_net import build_tryon_model
        from comfyui_tryon.pipeline.idm_vton_customise import TrainingPair

        self.args, self.torch = args, torch
        self.config = CONFIGS[args.config]
        weights = {"fp32": "default", "fp16": "fp16", "bf16": "bf16"}[args.dtype]
        tryon_ref, garment_ref = reference_unets(self.config.widths)
        self.tryon = build_tryon_model(tryon_ref.state_dict(), weights)
        self.garment = build_garment_model(garment_ref.state_dict(), weights)
        del tryon_ref, garment_ref
        gc.collect()
        inputs = make_inputs(self.config.latent)
        compute = self.tryon.model.manual_cast_dtype or self.tryon.model.get_dtype()
        device = self.tryon.load_device
        resampler = self.tryon.model.ip_resampler
        with torch.no_grad():
            ip = [resampler.to(device)(c.to(device, compute)).cpu() for c in (inputs.clip_cond, inputs.clip_uncond)]
        state = TryOnState(
            self.garment, inputs.garment_latent, inputs.garment_context, ip[0], ip[1], self.tryon.model.ip_adapter, wanted_feature_keys(self.tryon)
        )
        model = patch_tryon_model(self.tryon, state)
        h, w = inputs.image_size
        values = {"tryon_concat": inputs.concat, "width": w, "height": h, "crop_w": 0, "crop_h": 0, "target_width": w, "target_height": h}
        positive = [[inputs.text_cond, {**values, "pooled_output": inputs.pooled_cond}]]
        target = inputs.noise / self.tryon.model.latent_format.scale_factor  # any latent: the sampling path scales it
        self.pair = TrainingPair(model, positive, target, None, tryon_bank(model))

    def train(self, checkpointing: bool, on_step=None):
        from comfyui_tryon.pipeline.idm_vton_customise import CustomiseOptions, train_decoder_lora

        options = CustomiseOptions(self.args.steps, 1e-4, self.args.rank, self.args.target, "whole image", 0, checkpointing)
        with self.torch.inference_mode(False):
            return train_decoder_lora(self.pair, options, on_step)


def time_steps(bench: Bench, checkpointing: bool) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of every step after the first."""
    marks = [clocks()]

    def on_step(step, loss):
        if bench.pair.model.load_device.type == "cuda":
            bench.torch.cuda.synchronize()
        marks.append(clocks())

    bench.train(checkpointing, on_step)
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks[1:-1], marks[2:], strict=True)]


def measure_memory(args) -> dict:
    setup_comfy(args)
    bench = Bench(args)
    torch = bench.torch
    checkpointing = args.memory_only == "on"
    if bench.pair.model.load_device.type == "cuda":
        import comfy.model_management

        comfy.model_management.load_models_gpu([bench.pair.model], force_full_load=True)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        bench.train(checkpointing)
        peak = torch.cuda.max_memory_allocated()
        return {"checkpointing": args.memory_only, "cuda_max_allocated_gib": peak / 2**30, "cuda_training_extra_gib": (peak - before) / 2**30}
    with PeakRSS() as rss:
        bench.train(checkpointing)
    return {"checkpointing": args.memory_only, "rss_peak_gib": rss.peak / 2**30, "rss_training_extra_gib": (rss.peak - rss.baseline) / 2**30}


def memory_in_subprocess(args, setting: str) -> dict:
    argv = [sys.executable, __file__, "--config", args.config, "--steps", "2", "--rank", str(args.rank), "--target", args.target]
    argv += ["--device", args.device, "--dtype", args.dtype, "--memory-only", setting]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return memory_child(argv, {"checkpointing": setting})


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_only:
        print("MEMORY " + json.dumps(measure_memory(args)))
        return 0
    setup_comfy(args)
    bench = Bench(args)
    print(bench.config.describe().replace(f", {bench.config.steps} steps euler, CFG {bench.config.cfg}", ""))
    print(f"training: {args.steps} steps per run (first one not counted) x {args.reps} runs, rank {args.rank}, {args.target}, weights {args.dtype}")
    times = {True: [], False: []}
    for _ in range(args.reps):
        for checkpointing in (False, True):
            times[checkpointing] += time_steps(bench, checkpointing)
    report = {}
    for checkpointing, label in ((False, "off"), (True, "on")):
        wall = statistics.median(t[0] for t in times[checkpointing])
        cpu = statistics.median(t[1] for t in times[checkpointing])
        report[label] = {"wall_s_per_step": wall, "cpu_s_per_step": cpu}
        print(f"checkpointing {label:>3}: {wall:7.3f} s/step wall, {cpu:7.3f} s/step CPU ({len(times[checkpointing])} steps)")
    print(
        f"ratio on/off: wall {report['on']['wall_s_per_step'] / report['off']['wall_s_per_step']:.2f}x, "
        f"CPU {report['on']['cpu_s_per_step'] / report['off']['cpu_s_per_step']:.2f}x"
    )
    if not args.no_memory:
        del bench
        gc.collect()
        memory = {setting: memory_in_subprocess(args, setting) for setting in ("off", "on")}
        for setting, values in memory.items():
            print(f"memory, checkpointing {setting:>3}: " + json.dumps(values))
        key = "cuda_training_extra_gib" if args.device == "cuda" else "rss_training_extra_gib"
        if all(key in values for values in memory.values()):
            print(f"ratio on/off of the memory training adds: {memory['on'][key] / memory['off'][key]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
