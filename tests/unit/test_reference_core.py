"""The reference-attention core in OOTDiffusion's configuration, against a literal computation on tiny ComfyUI UNets.

OOTDiffusion (docs: the OOTDiffusion issue; its facts): the garment UNet runs once per sampling run at timestep 0, on
the garment latent for the cond half and on an all-zero latent for the uncond half; each transformer block's raw
input (before norm1) is captured; in the denoiser each block computes `h = cat([x, g]); h = attn1(norm1(h)) + h;
keep the first half`, with the denoiser's own norm1. Nothing here is OOTDiffusion itself: the same core IDM-VTON runs
on, given the other parameters.
"""

from __future__ import annotations

import types

import pytest
import torch

CONTEXT = 32
LATENT = (1, 4, 16, 16)


def tiny_sd15_unet_config(in_channels: int) -> dict:
    """An SD1.5-shaped ComfyUI UNet at tiny widths: attention at two levels (conv proj, 8 heads), a plain last level."""
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "in_channels": in_channels,
        "model_channels": 32,
        "num_res_blocks": [1, 1, 1],
        "channel_mult": [1, 2, 2],
        "transformer_depth": [1, 1, 0],
        "transformer_depth_output": [0, 0, 1, 1, 1, 1],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
        "context_dim": CONTEXT,
        "adm_in_channels": None,
        "use_temporal_attention": False,
    }


def tiny_sd15_model(in_channels: int, seed: int):
    import comfy.model_patcher
    import comfy.supported_models
    from tiny_models import _randomize

    model = comfy.supported_models.SD15(tiny_sd15_unet_config(in_channels)).get_model({})
    _randomize(model.diffusion_model, torch.Generator().manual_seed(seed))
    model.diffusion_model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


@pytest.fixture(scope="module")
def ootd_like(pack):
    """A vton-shaped denoiser (8 channels) and a garment UNet (4), with OOTD's spec installed through the core."""
    from comfyui_tryon.attention.garment_features import transformer_block_widths
    from comfyui_tryon.attention.reference_bank import Attn1Hook, install_reference_attention
    from comfyui_tryon.attention.reference_spec import CapturePoint, OncePerRun, ReferenceInputs, ReferenceSpec, UncondReference

    vton, garm = tiny_sd15_model(8, seed=21), tiny_sd15_model(4, seed=22)
    generator = torch.Generator().manual_seed(5)
    garment_latent = torch.randn(LATENT, generator=generator)
    context = torch.randn(1, 4, CONTEXT, generator=generator)  # dc: [BOS, word, EOS, image embedding]
    person_latent = torch.randn(LATENT, generator=generator)  # the masked-person latent (unscaled), 4 extra channels
    blocks = tuple(transformer_block_widths(vton.model.diffusion_model))
    spec = ReferenceSpec(blocks, CapturePoint.BLOCK_INPUT, UncondReference.FEATURES_OF_ZERO_LATENT, OncePerRun(timestep=0.0))
    patched = {}
    for hook in Attn1Hook:
        model = vton.clone()
        inputs = ReferenceInputs(garm, garment_latent, context)
        bank = install_reference_attention(model, spec, inputs, wrapper_key="ootd_test", node_name="Test", attn1_hook=hook)
        patched[hook.value] = (model, bank)
    return types.SimpleNamespace(
        vton=vton, garm=garm, garment_latent=garment_latent, context=context, person_latent=person_latent, blocks=blocks, patched=patched
    )


def literal_garment_features(case) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The garment UNet run to its end at t=0 on [garment, zeros], with every transformer block's input recorded."""
    from comfy.ldm.modules.attention import BasicTransformerBlock

    unet = case.garm.model.diffusion_model
    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]  # module order = execution order
    sink: list[torch.Tensor] = []
    hooks = [block.register_forward_pre_hook(lambda module, args: sink.append(args[0])) for block in blocks]
    try:
        latent = torch.cat([case.garment_latent, torch.zeros_like(case.garment_latent)])
        unet(latent, torch.zeros(2), context=case.context.expand(2, -1, -1))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(sink) == len(case.blocks)
    return [t[:1] for t in sink], [t[1:] for t in sink]


def literal_ootd_eps(case, x_scaled: torch.Tensor, timestep: float, order: tuple[int, ...]) -> torch.Tensor:
    """The denoiser on a CFG batch, each block as the original's: cat([x, g]) -> norm1 -> attn1 + residual -> first half."""
    from comfy.ldm.modules.attention import BasicTransformerBlock

    cond, uncond = literal_garment_features(case)
    unet = case.vton.model.diffusion_model
    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]

    def literal_forward(block, garment):
        def forward(x, context=None, transformer_options={}):
            tokens = x.shape[1]
            h = torch.cat([x, garment.to(x)], dim=1)
            h = block.attn1(block.norm1(h)) + h
            h = h[:, :tokens]
            h = block.attn2(block.norm2(h), context=context) + h
            return block.ff(block.norm3(h)) + h

        return forward

    for block, g_cond, g_uncond in zip(blocks, cond, uncond, strict=True):
        block.forward = literal_forward(block, torch.cat([g_cond if kind == 0 else g_uncond for kind in order]))
    try:
        x_in = torch.cat([x_scaled, case.person_latent], dim=1).repeat(len(order), 1, 1, 1)
        return unet(x_in, torch.full((len(order),), float(timestep)), context=case.context.expand(len(order), -1, -1))
    finally:
        for block in blocks:
            del block.forward


def our_eps(case, model, x_scaled: torch.Tensor, sigma: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """eps of the patched MODEL on chunks in the given cond(0)/uncond(1) order, as ComfyUI calls it (wrappers included)."""
    import math

    base = model.model
    options = dict(model.model_options["transformer_options"])
    options["wrappers"] = model.wrappers
    options["cond_or_uncond"] = list(order)
    x = (x_scaled * math.sqrt(float(sigma) ** 2 + 1)).repeat(len(order), 1, 1, 1)
    sigmas = sigma.repeat(len(order))
    concat = case.person_latent.repeat(len(order), 1, 1, 1)
    denoised = base.apply_model(x, sigmas, c_concat=concat, c_crossattn=case.context.expand(len(order), -1, -1), transformer_options=options)
    return (x - denoised) / sigma


@pytest.mark.parametrize("hook", ["replace", "patch"])
@pytest.mark.parametrize("order", [(0, 1), (1, 0), (0,), (1,)], ids=["cond-first", "uncond-first", "cond-only", "uncond-only"])
def test_eps_equals_literal_concat_then_norm1_then_attn1_then_first_half(ootd_like, hook, order):
    case = ootd_like
    model, bank = case.patched[hook]
    ms = model.model.model_sampling
    sigma = ms.sigmas[500].reshape(1)
    x_scaled = torch.randn(LATENT, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ours = our_eps(case, model, x_scaled, sigma, order)
        literal = literal_ootd_eps(case, x_scaled, float(ms.timestep(sigma)), order)
    assert (ours - literal).abs().max().item() <= 1e-5 * max(literal.abs().max().item(), 1.0)
    assert bank.features == {} and bank.reference_passes >= 1  # a bare call computes its features and frees them
    if len(order) == 2:  # the uncond half's garment (zero latent's features) really differs from the cond half's
        assert (ours[:1] - ours[1:]).abs().max().item() > 1e-3


def test_features_are_block_inputs_normalised_once_by_the_denoiser_norm1(ootd_like):
    from comfyui_tryon.attention.garment_features import transformer_blocks

    case = ootd_like
    _, bank = case.patched["replace"]
    with torch.no_grad():
        bank.ensure_features(torch.tensor([999.0]), torch.zeros(1))  # the fixed timestep 0 wins over the call's
        cond, uncond = literal_garment_features(case)
        vton_blocks = transformer_blocks(case.vton.model.diffusion_model)
        for key, g_cond, g_uncond in zip(case.blocks, cond, uncond, strict=True):
            features = bank.features_for(key)
            norm1 = vton_blocks[key].norm1
            assert (features.cond - norm1(g_cond)).abs().max().item() <= 1e-5
            assert (features.uncond - norm1(g_uncond)).abs().max().item() <= 1e-5
            assert features.uncond.abs().max().item() > 1e-2  # materialised, not zero tokens
    assert bank.features_timestep == 0.0
    bank.release()


def test_garment_unet_runs_once_per_sampling_run_at_timestep_zero(ootd_like, monkeypatch):
    import comfy.sample
    import comfy.samplers
    from comfyui_tryon.attention import reference_bank

    case = ootd_like
    model, bank = case.patched["replace"]
    ms = model.model.model_sampling
    sigmas = torch.cat([ms.sigmas[[800, 500, 200]], torch.zeros(1)])
    timesteps = []
    stock = reference_bank.garment_features
    monkeypatch.setattr(reference_bank, "garment_features", lambda unet, latent, t, *a: timesteps.append(t.tolist()) or stock(unet, latent, t, *a))
    cond = [[case.context, {"noise_concat": case.person_latent}]]
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(3))
    passes = bank.reference_passes
    with torch.no_grad():
        ours = comfy.sample.sample_custom(
            model, noise, 2.0, comfy.samplers.sampler_object("euler"), sigmas, cond, cond, torch.zeros_like(noise), seed=0, disable_pbar=True
        )
    assert timesteps == [[0.0, 0.0]] and bank.reference_passes == passes + 1  # one batched pass: garment and zero latent
    assert bank.live_state() == {"feature_tensors": 0, "step_depth": 0, "run_timestep_set": False}
    monkeypatch.undo()
    x = noise * sigmas[0]
    with torch.no_grad():
        for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:], strict=True):
            scaled = x / (sigma**2 + 1).sqrt()
            eps_cond, eps_uncond = literal_ootd_eps(case, scaled, float(ms.timestep(sigma.reshape(1))), (0, 1)).chunk(2)
            x = x + (eps_uncond + 2.0 * (eps_cond - eps_uncond)) * (next_sigma - sigma)
    literal = model.model.process_latent_out(x)
    assert (ours - literal).abs().max().item() <= 1e-5 * literal.abs().max().item()
