"""Benchmark: our ComfyUI-native OOTDiffusion against the literal reference, same weights and inputs, one process.

Sides (alternating, after one untimed warm-up each, `--reps` times; medians of wall-clock and process CPU time per
sampling step, the garment UNet's single pass included in the run):
- "reference": tests/support/reference_ootd.py on diffusers: the garment UNet to its end on [garment, zeros] at t=0,
  every denoiser block over cat([h, g]) (2N tokens: norm1, self-attention with 2N queries, residual) keeping the
  first half, CFG batch [cond, uncond], diffusers' UniPC with the repaint;
- "ours": the patched unet_vton MODEL sampled by ComfyUI (SamplerCustom's path: `comfy.sample.sample_custom`, the
  OOTDiffusion sampler in unipc mode, its karras sigmas, CFG with cond+uncond batched): the garment features
  normalised once per run, queries from the person's N tokens only, keys/values over N + N.
The two final latents must agree (fp32): the script exits 1 otherwise.

    .venv/bin/python bench/bench_ootd.py                       # CPU, mid-size SD1.5 (widths 128/256/384/384), latent 64x48
    .venv/bin/python bench/bench_ootd.py --latent 128x96       # the real 768x1024 latent
    python bench/bench_ootd.py --device cuda --widths 320,640,1280,1280 --latent 128x96 --steps 20 --dtype fp16
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests" / "support"), str(HERE)]

from run_bench import setup_comfy  # noqa: E402  (shared with the IDM-VTON benchmark)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="128,256,384,384", help="block_out_channels (the real SD1.5: 320,640,1280,1280); 8 heads")
    parser.add_argument("--latent", default="64x48", help="latent HxW (the real 1024x768 image: 128x96)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--no-flops", action="store_true", help="skip counting each side's FLOPs (one more untimed run each)")
    return parser.parse_args(argv)


class Bench:
    """Both sides' models and one set of inputs, from fixed seeds."""

    def __init__(self, args):
        import comfy_host
        import fixtures_ootd
        import torch
        from diffusers import UNet2DConditionModel
        from tiny_models import _randomize

        self.args, self.torch = args, torch
        widths = tuple(int(w) for w in args.widths.split(","))
        height, width = (int(v) for v in args.latent.split("x"))
        self.device = torch.device(args.device)
        self.dtype = torch.float16 if args.dtype == "fp16" else torch.float32
        unets = {}
        for part, channels, seed in (("vton", 8, 1), ("garm", 4, 2)):
            unet = UNet2DConditionModel(**fixtures_ootd.unet_kwargs(channels, widths, 768))
            _randomize(unet, torch.Generator().manual_seed(seed))
            unets[part] = unet.eval()
        self.apply = comfy_host.pack_module("pipeline.ootd_apply")
        self.sampling = comfy_host.pack_module("pipeline.ootd_sampling")
        build = comfy_host.pack_module("models.ootd_unet").build_ootd_unet
        weights = "fp16" if args.dtype == "fp16" else "default"
        self.vton, self.garm = (build({k: v.clone() for k, v in unets[p].state_dict().items()}, weights) for p in ("vton", "garm"))
        self.ref_vton, self.ref_garm = (unets[p].to(self.device, self.dtype) for p in ("vton", "garm"))
        generator = torch.Generator().manual_seed(3)
        shape = (1, 4, height, width)
        self.garment_latent = torch.randn(shape, generator=generator)
        self.masked_latent = torch.randn(shape, generator=generator)
        self.person_latent = torch.randn(shape, generator=generator)
        self.context = torch.randn(1, 4, 768, generator=generator)  # dc: [BOS, word, EOS, image embedding]
        self.mask = torch.zeros(1, height * 8, width * 8)
        self.mask[:, height * 2 : height * 6, width * 2 : width * 6] = 1
        self.latent_mask = torch.nn.functional.interpolate(self.mask.unsqueeze(1), size=(height, width))
        self.describe = (
            f"SD1.5 layout (4 levels, 2 resnets, 16 transformer blocks, 8 heads), widths {'/'.join(map(str, widths))}, context 768 (4 tokens), "
            f"latent {height}x{width} (image {height * 8}x{width * 8}), {args.steps} steps UniPC, CFG 2, {args.dtype} on {args.device}"
        )

    def ours(self):
        import comfy.sample

        apply, sampling = self.apply, self.sampling
        model, _ = apply.patch_vton_model(self.vton, self.garm, self.garment_latent, self.context)
        conditioning = [[self.context, {"concat_latent_image": self.masked_latent}]]
        latent = self.person_latent * (1 - self.latent_mask)
        noise = comfy.sample.prepare_noise(latent, 0)
        sigmas = sampling.ootd_sigmas(model, self.args.steps, "karras")
        with self.torch.no_grad():
            out = comfy.sample.sample_custom(
                model, noise, 2.0, sampling.ootd_sampler("unipc"), sigmas, conditioning, conditioning, latent, noise_mask=self.latent_mask, seed=0
            )
        return out.float().cpu() * 0.18215  # the original's latent space

    def reference(self):
        import reference_ootd

        to = {"device": self.device, "dtype": self.dtype}
        with self.torch.no_grad():
            out = reference_ootd.sample(
                self.ref_vton,
                self.ref_garm,
                garment_latent=self.garment_latent.to(**to),
                vton_latent=self.masked_latent.to(**to),
                original_latent=self.person_latent.to(**to),
                mask=self.mask.to(**to),
                prompt_embeds=self.context.to(**to),
                steps=self.args.steps,
                guidance=2.0,
                seed=0,
            )
        return out.float().cpu()


def timed(function, torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    out = function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def count_flops(side) -> int:
    """The floating-point operations of one run of `side`, counted by PyTorch's FlopCounterMode (matmuls, convolutions,
    attention): the saving the two exact changes should give, independent of the machine."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)  # CPU SDPA's kernel has no formula of its own

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        side()
    return counter.get_total_flops()


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    setup_comfy(args)
    bench = Bench(args)
    print(bench.describe)
    print(f"torch threads {torch.get_num_threads()}; ComfyUI attention: PyTorch SDPA")
    sides = {"reference": bench.reference, "ours": bench.ours}
    results = {name: side() for name, side in sides.items()}  # warm-up (untimed), and the outputs to compare
    times = {name: [] for name in sides}
    for _ in range(args.reps):
        for name, side in sides.items():
            _, wall, cpu = timed(side, torch, bench.device)
            times[name].append((wall / args.steps, cpu / args.steps))
    reference_wall = statistics.median(t[0] for t in times["reference"])
    reference_cpu = statistics.median(t[1] for t in times["reference"])
    print(f"{'side':<10} {'wall s/step':>12} {'ratio':>7} {'CPU s/step':>11} {'ratio':>7}")
    for name in sides:
        wall, cpu = statistics.median(t[0] for t in times[name]), statistics.median(t[1] for t in times[name])
        print(f"{name:<10} {wall:>12.3f} {wall / reference_wall:>7.2f} {cpu:>11.3f} {cpu / reference_cpu:>7.2f}")
    if not args.no_flops:
        flops = {name: count_flops(side) for name, side in sides.items()}
        ratio = flops["ours"] / flops["reference"]
        print(f"FLOPs per run (garment pass included): reference {flops['reference'] / 1e9:.1f} G, ours {flops['ours'] / 1e9:.1f} G, ratio {ratio:.2f}")
    difference = (results["ours"] - results["reference"]).abs().max().item()
    scale = results["reference"].abs().max().item()
    print(f"final latent: max |ours - reference| = {difference:.2e} (latent max {scale:.2f})")
    tolerance = 1e-3 * max(scale, 1.0) if args.dtype == "fp32" else float("inf")
    return 0 if difference <= tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
