"""Benchmark: our ComfyUI-native IDM-VTON against the literal reference, same weights and inputs, one run.

Timing: in one process, the sides alternate (A/B[/C], repeated --reps times); medians of per-step and
per-image (N sampling steps) times, and ratios to the reference. Memory: each side in its own subprocess
(peak RSS while sampling on CPU, torch.cuda.max_memory_allocated on CUDA). Agreement: the final latents of
our exact path and the reference must agree to 1e-4 (relative to the latent's magnitude) in fp32.
Sides: "reference" = tests/support/reference_idm.py (concat-and-slice self-attention over 2N tokens, materialised
zeros for the uncond half, GarmentNet to its end); "ours" = the patched MODEL sampled by ComfyUI's euler
sampler with CFG (cond+uncond batched); "cache:<mode>" = ours with the approximate garment feature cache.

    .venv/bin/python bench/run_bench.py                        # CPU, mid-size config
    python bench/run_bench.py --config gpu-real --device cuda   # fp16, real SDXL sizes; add --weights fp8_e4m3fn or --lowvram
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests" / "support"), str(HERE)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu-mid", choices=["cpu-mid", "cpu-real-latent", "gpu-real"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"], help="compute dtype (default: fp32 on cpu, fp16 on cuda)")
    parser.add_argument(
        "--weights", default=None, choices=["default", "fp16", "bf16", "fp8_e4m3fn"], help="our weight dtype (ComfyUI's; default: the compute dtype)"
    )
    parser.add_argument("--lowvram", action="store_true", help="ComfyUI's --lowvram mode for our side")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps per image (default: the config's)")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions of each side")
    parser.add_argument("--feature-cache", default="mid_schedule", help="comma list of cache modes to time too ('' for none)")
    parser.add_argument("--uncond-keys", default="single_key", choices=["single_key", "materialised"], help="how our exact side attends the uncond zeros")
    parser.add_argument("--also-materialised", action="store_true", help="time our exact side with materialised zeros as well")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, = the cores)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-side memory subprocesses")
    parser.add_argument("--sides", default=None, help="comma list of sides to time (default: reference, ours, cache modes)")
    parser.add_argument("--memory-only", default=None, help=argparse.SUPPRESS)  # internal: measure one side's memory
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("fp16" if args.device == "cuda" else "fp32")
    args.weights = args.weights or {"fp32": "default", "fp16": "fp16", "bf16": "bf16"}[args.dtype]
    return args


def setup_comfy(args):
    """ComfyUI in this process with PyTorch SDPA attention (--use-pytorch-cross-attention), on the chosen device (and
    lowvram, torch threads where `args` has them); the pack imported. Shared by every benchmark here."""
    import comfy_host

    comfy_host.put_comfy_on_path()
    import comfy.cli_args

    comfy.cli_args.args.use_pytorch_cross_attention = True
    comfy.cli_args.args.cpu = args.device == "cpu"
    comfy.cli_args.args.lowvram = getattr(args, "lowvram", False)
    import comfy.model_management  # noqa: F401  (reads the flags above)

    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    return comfy_host.import_pack()


class Bench:
    """The models and inputs of every side, built once from one seed."""

    def __init__(self, args, sides):
        import torch
        from bench_models import CONFIGS, make_inputs, reference_unets

        self.args, self.torch = args, torch
        self.config = CONFIGS[args.config]
        self.steps = args.steps or self.config.steps
        self.device = torch.device(args.device)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
        self.inputs = make_inputs(self.config.latent)
        tryon_ref, garment_ref = reference_unets(self.config.widths)
        self.ours: dict = {}
        if any(side != "reference" for side in sides):
            self._build_ours(tryon_ref.state_dict(), garment_ref.state_dict(), sides)
        self.reference = None
        if "reference" in sides:
            self.reference = (tryon_ref.to(self.device, self.dtype), garment_ref.to(self.device, self.dtype))
            with torch.no_grad():
                resampler = tryon_ref.encoder_hid_proj
                clip = [c.to(self.device, self.dtype) for c in (self.inputs.clip_cond, self.inputs.clip_uncond)]
                self.reference_ip = [resampler(c) for c in clip]  # once per image, untimed (as ours)
            tryon_ref.encoder_hid_proj = None
        del tryon_ref, garment_ref
        gc.collect()

    def _build_ours(self, tryon_sd, garment_sd, sides):
        import comfy.samplers
        from comfyui_tryon.attention.tryon_patch import TryOnState, patch_tryon_model, wanted_feature_keys
        from comfyui_tryon.models.garment_net import build_garment_model
        from comfyui_tryon.models.tryon_net import build_tryon_model

        torch = self.torch
        self.tryon = build_tryon_model(tryon_sd, self.args.weights)
        self.garment = build_garment_model(garment_sd, self.args.weights)
        del tryon_sd, garment_sd
        resampler = self.tryon.model.ip_resampler
        compute = self.tryon.model.manual_cast_dtype or self.tryon.model.get_dtype()
        with torch.no_grad():
            ip = [resampler.to(self.device)(c.to(self.device, compute)).cpu() for c in (self.inputs.clip_cond, self.inputs.clip_uncond)]
        inputs = self.inputs
        h, w = inputs.image_size
        values = {"tryon_concat": inputs.concat, "width": w, "height": h, "crop_w": 0, "crop_h": 0, "target_width": w, "target_height": h}
        self.positive = [[inputs.text_cond, {**values, "pooled_output": inputs.pooled_cond}]]
        self.negative = [[inputs.text_uncond, {**values, "pooled_output": inputs.pooled_uncond}]]
        self.model_sampling = self.tryon.get_model_object("model_sampling")
        self.sigmas = comfy.samplers.calculate_sigmas(self.model_sampling, "normal", self.steps)
        for side in sides:
            if side == "reference":
                continue
            cache = side.split(":", 1)[1] if side.startswith("cache:") else "off"
            uncond_keys = "materialised" if side == "ours-materialised" else self.args.uncond_keys
            state = TryOnState(
                self.garment,
                inputs.garment_latent,
                inputs.garment_context,
                ip[0],
                ip[1],
                self.tryon.model.ip_adapter,
                wanted_feature_keys(self.tryon),
                feature_cache=cache,
                uncond_keys=uncond_keys,
            )
            self.ours[side] = (patch_tryon_model(self.tryon, state), state)

    def run(self, side: str):
        """One image: (final latent, per-step (wall, CPU) seconds)."""
        return self.run_reference() if side == "reference" else self.run_ours(side)

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def run_ours(self, side):
        import comfy.sample
        import comfy.samplers

        torch = self.torch
        model, _ = self.ours[side]
        stamps = [clocks()]

        def callback(step, x0, x, total):
            self.sync()
            stamps.append(clocks())

        noise = self.inputs.noise
        with torch.no_grad():
            out = comfy.sample.sample_custom(
                model,
                noise,
                self.config.cfg,
                comfy.samplers.sampler_object("euler"),
                self.sigmas,
                self.positive,
                self.negative,
                torch.zeros_like(noise),
                callback=callback,
                disable_pbar=True,
                seed=0,
            )
        return out.float().cpu(), [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:], strict=False)]

    def run_reference(self):
        from reference_idm import tryon_eps_reference

        torch = self.torch
        tryon, garment = self.reference
        inputs, device, dtype = self.inputs, self.device, self.dtype
        to = lambda t: t.to(device, dtype)  # noqa: E731
        h, w = inputs.image_size
        time_ids = to(torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32))
        ms, sigmas = self.model_sampling, self.sigmas
        max_denoise = math.isclose(float(ms.sigma_max), float(sigmas[0]), rel_tol=1e-5) or float(sigmas[0]) > float(ms.sigma_max)
        x = ms.noise_scaling(sigmas[0], inputs.noise, torch.zeros_like(inputs.noise), max_denoise).to(device)
        times = []
        with torch.no_grad():
            for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:], strict=True):
                start = clocks()
                sample = to(x / math.sqrt(float(sigma) ** 2 + 1))
                timestep = torch.tensor(float(ms.timestep(sigma.reshape(1))), device=device)
                eps_uncond, eps_cond = tryon_eps_reference(
                    tryon,
                    garment,
                    sample,
                    timestep,
                    to(inputs.concat),
                    to(inputs.text_cond),
                    to(inputs.text_uncond),
                    to(inputs.pooled_cond),
                    to(inputs.pooled_uncond),
                    time_ids,
                    self.reference_ip[0],
                    self.reference_ip[1],
                    to(inputs.garment_latent),
                    to(inputs.garment_context),
                )
                eps = (eps_uncond + self.config.cfg * (eps_cond - eps_uncond)).float()
                x = x + eps * float(next_sigma - sigma)
                self.sync()
                end = clocks()
                times.append((end[0] - start[0], end[1] - start[1]))
        return self.tryon.model.process_latent_out(x.float().cpu()), times


def clocks() -> tuple[float, float]:
    """(wall, CPU time of this process): CPU time is less sensitive to other jobs on a shared machine."""
    return time.perf_counter(), time.process_time()


# --- memory (one side per subprocess) ---------------------------------------------------------
class PeakRSS:
    """Polls this process's RSS every 2 ms in a thread (CPU peak memory while sampling)."""

    def __enter__(self):
        import psutil

        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.baseline = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def measure_memory(args) -> dict:
    """Runs in a child: builds one side, samples one image, reports its peak memory."""
    setup_comfy(args)
    side = args.memory_only
    sides = ["ours", side] if side == "reference" else [side]  # the reference borrows our schedule (sigmas only)
    bench = Bench(args, sides)
    torch = bench.torch
    if side == "reference":  # drop our models: only the schedule is needed
        bench.ours.clear()
        del bench.tryon.model.diffusion_model, bench.garment
        gc.collect()
    if bench.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        bench.run(side)
        return {
            "side": side,
            "cuda_max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "cuda_max_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
        }
    with PeakRSS() as rss:
        bench.run(side)
    return {"side": side, "rss_before_gib": rss.baseline / 2**30, "rss_peak_gib": rss.peak / 2**30, "rss_sampling_extra_gib": (rss.peak - rss.baseline) / 2**30}


def memory_in_subprocess(args, side: str) -> dict:
    argv = [
        sys.executable,
        __file__,
        "--config",
        args.config,
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--weights",
        args.weights,
        "--reps",
        "1",
        "--uncond-keys",
        args.uncond_keys,
        "--memory-only",
        side,
    ]
    if args.steps:
        argv += ["--steps", str(args.steps)]
    if args.lowvram:
        argv.append("--lowvram")
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return memory_child(argv, {"side": side})


def memory_child(argv: list[str], label: dict) -> dict:
    """Runs a benchmark child (`argv`) that prints one `MEMORY {json}` line and returns that dict, or `label` with the
    child's error output."""
    # glibc keeps freed heap memory (its mmap threshold grows after frees), so the weights' build would hide the
    # peak being measured: a fixed threshold returns every large buffer to the OS and RSS follows what is live.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY ") :])
    return {**label, "error": (done.stderr or done.stdout)[-2000:]}


# --- the report ---------------------------------------------------------------------------------
def relative_gap(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def decoded_deviation(exact, cached) -> dict:
    """Max/mean abs difference of images decoded by a random-weight SDXL-architecture VAE (diffusers), in [0, 1] units.

    Random weights give final latents of ~1e4 at zsnr's sigma_max; both latents are divided by the exact one's std first.
    """
    import torch
    from bench_models import randomize
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=4,
    ).eval()
    randomize(vae, 7)
    scale = exact.std()
    with torch.no_grad():
        images = [((vae.decode(x / scale).sample + 1) / 2).clamp(0, 1) for x in (exact, cached)]
    diff = (images[0] - images[1]).abs()
    return {"image_max_abs": float(diff.max()), "image_mean_abs": float(diff.mean())}


def main(argv=None):
    args = parse_args(argv)
    if args.memory_only:
        print("MEMORY " + json.dumps(measure_memory(args)), flush=True)
        return 0
    pack = setup_comfy(args)  # noqa: F841
    import comfy.ldm.modules.attention as comfy_attention
    import torch
    from bench_models import CONFIGS

    caches = [f"cache:{mode}" for mode in args.feature_cache.split(",") if mode]
    sides = args.sides.split(",") if args.sides else ["reference", "ours"] + (["ours-materialised"] if args.also_materialised else []) + caches
    config = CONFIGS[args.config]
    print(f"config   {config.describe() if not args.steps else config.describe().replace(f'{config.steps} steps', f'{args.steps} steps')}")
    print(
        f"machine  {args.device}: {torch.cuda.get_device_name() if args.device == 'cuda' else _cpu_name()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; compute {args.dtype}, our weights {args.weights}{', lowvram' if args.lowvram else ''}; "
        f"ComfyUI attention: {comfy_attention.optimized_attention.__name__} (--use-pytorch-cross-attention)"
    )
    start = time.perf_counter()
    bench = Bench(args, sides)
    print(f"built    in {time.perf_counter() - start:.1f}s; sides {', '.join(sides)}; {args.reps} alternating repetitions")
    results: dict[str, dict] = {side: {"image": [], "step": [], "image_cpu": [], "step_cpu": []} for side in sides}
    finals: dict = {}
    for side in sides:  # warm-up (first-call allocations, lazy loading), untimed
        finals[side] = bench.run(side)[0]
    for rep in range(args.reps):
        order = sides if rep % 2 == 0 else sides[::-1]
        for side in order:
            start = clocks()
            latent, steps = bench.run(side)
            end = clocks()
            results[side]["image"].append(end[0] - start[0])
            results[side]["image_cpu"].append(end[1] - start[1])
            results[side]["step"].extend(wall for wall, _ in steps)
            results[side]["step_cpu"].extend(cpu for _, cpu in steps)
            finals[side] = latent
        print(f"rep {rep}   " + "  ".join(f"{side} {results[side]['image'][-1]:.2f}s" for side in order), flush=True)

    summary = {}
    median = {side: {k: statistics.median(v) for k, v in results[side].items()} for side in sides}
    ref = median.get("reference")
    print(f"\nmedians over {args.reps} images x {bench.steps} steps per side; ratio = side / reference")
    print(f"{'side':<22}{'s/step':>9}{'s/image':>10}{'ratio':>8}   {'CPU s/step':>11}{'CPU s/image':>12}{'ratio':>8}")
    for side in sides:
        m = median[side]
        ratio = {k: m[k] / ref[k] if ref else float("nan") for k in m}
        summary[side] = {
            "s_per_step": m["step"],
            "s_per_image": m["image"],
            "ratio_step": ratio["step"],
            "ratio_image": ratio["image"],
            "cpu_s_per_step": m["step_cpu"],
            "cpu_s_per_image": m["image_cpu"],
            "cpu_ratio_step": ratio["step_cpu"],
        }
        print(f"{side:<22}{m['step']:>9.3f}{m['image']:>10.2f}{ratio['step']:>8.3f}   {m['step_cpu']:>11.3f}{m['image_cpu']:>12.2f}{ratio['step_cpu']:>8.3f}")

    print()
    exact_ok = True
    if "reference" in finals and "ours" in finals:
        gap = relative_gap(finals["ours"], finals["reference"])
        exact_ok = gap <= 1e-4 or args.dtype != "fp32"
        print(
            f"agreement ours vs reference: max|diff|/max|ref| = {gap:.2e} ({'OK <= 1e-4' if gap <= 1e-4 else 'ABOVE 1e-4'}"
            f"{'' if args.dtype == 'fp32' else f', {args.dtype}: informative only'})"
        )
    if "ours-materialised" in finals:
        print(f"agreement ours single_key vs materialised: {relative_gap(finals['ours'], finals['ours-materialised']):.2e}")
    for side in caches:
        if "ours" not in finals:
            break
        exact, cached = finals["ours"], finals[side]
        diff = (exact - cached).abs()
        deviation = {
            "latent_max_abs": float(diff.max()),
            "latent_mean_abs": float(diff.mean()),
            "latent_max_rel": relative_gap(cached, exact),
            "latent_mean_rel": float(diff.mean() / exact.abs().mean()),
            **decoded_deviation(exact, cached),
        }
        summary[side]["deviation"] = deviation
        print(
            f"deviation {side} vs exact: latent max {deviation['latent_max_abs']:.3g} / mean {deviation['latent_mean_abs']:.3g} "
            f"(relative {deviation['latent_max_rel']:.2e} / {deviation['latent_mean_rel']:.2e}); decoded image [0,1] max "
            f"{deviation['image_max_abs']:.4f} / mean {deviation['image_mean_abs']:.4f}"
        )

    if not args.no_memory:
        print("\npeak memory (one subprocess per side, one image each):")
        for side in sides:
            memory = memory_in_subprocess(args, side)
            summary[side]["memory"] = memory
            print("  " + json.dumps(memory))
    print("\nSUMMARY " + json.dumps(summary))
    return 0 if exact_ok else 1


def _cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    sys.exit(main())
