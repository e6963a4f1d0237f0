"""Our ComfyUI-native IDM-VTON against the independent literal reference on diffusers (real depths, fp32)."""

from __future__ import annotations

import math

import pytest
import torch
from reference_idm import garment_features_reference, original_clip_pixel_values, tryon_eps_reference
from tiny_models import PRESETS, load_reference_unets
from tryon_setup import load_models, prepare_case

TIMESTEPS = [800, 600, 400, 200]


@pytest.fixture(scope="module")
def layout_case(pack, layout_repo):
    tryon, garment = load_models(layout_repo)
    case = prepare_case(tryon, garment, height=96, width=64)
    reference_tryon, reference_garment = load_reference_unets(layout_repo, PRESETS["layout"])
    return case, reference_tryon, reference_garment, layout_repo


def reference_ip_tokens(repo, tryon_unet, garment_pixels):
    """IP tokens as the original makes them: its CLIP image processor (PIL) and transformers' CLIP vision model."""
    from transformers import CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection.from_pretrained(repo / "image_encoder").eval()
    pixels = original_clip_pixel_values(garment_pixels)
    hidden = lambda p: encoder(pixel_values=p, output_hidden_states=True).hidden_states[-2]  # noqa: E731
    return tryon_unet.encoder_hid_proj(hidden(pixels)), tryon_unet.encoder_hid_proj(hidden(torch.zeros_like(pixels)))


def reference_eps(case, layout, sample, timestep):
    _, tryon_unet, garment_unet, repo = layout
    positive, negative = case.result.positive[0], case.result.negative[0]
    ip_cond, ip_uncond = reference_ip_tokens(repo, tryon_unet, case.garment_pixels)
    resampler, tryon_unet.encoder_hid_proj = tryon_unet.encoder_hid_proj, None
    try:
        time_ids = torch.tensor([[case.height, case.width, 0, 0, case.height, case.width]], dtype=torch.float32)
        return tryon_eps_reference(
            tryon_unet,
            garment_unet,
            sample,
            torch.tensor(float(timestep)),
            positive[1]["tryon_concat"],
            positive[0],
            negative[0],
            positive[1]["pooled_output"],
            negative[1]["pooled_output"],
            time_ids,
            ip_cond,
            ip_uncond,
            case.result.state.garment_latent,
            case.garment_cond[0][0],
        )
    finally:
        tryon_unet.encoder_hid_proj = resampler


def comfy_eps(case, x, sigma, order):
    """eps of the patched MODEL on a batch of chunks in the given cond(0)/uncond(1) order."""
    import comfy.model_management

    patched = case.result.model
    comfy.model_management.load_models_gpu([patched])
    base = patched.model
    conds = {0: case.result.positive[0], 1: case.result.negative[0]}
    size = dict(width=case.width, height=case.height, crop_w=0, crop_h=0, target_width=case.width, target_height=case.height)
    context = torch.cat([conds[k][0] for k in order])
    adm = torch.cat([base.encode_adm(pooled_output=conds[k][1]["pooled_output"], **size) for k in order])
    concat = torch.cat([conds[k][1]["tryon_concat"] for k in order])
    options = dict(patched.model_options["transformer_options"])
    options["wrappers"] = patched.wrappers  # what ComfyUI's sampling merges in (sampler_helpers)
    options["cond_or_uncond"] = list(order)
    x_in = x.repeat(len(order), 1, 1, 1)
    sigmas = sigma.repeat(x_in.shape[0])
    denoised = base.apply_model(x_in, sigmas, c_concat=concat, c_crossattn=context, y=adm, transformer_options=options)
    return ((x_in - denoised) / sigma).chunk(len(order))


def test_ip_tokens_match_the_original_with_its_clip_preprocessing(layout_case):
    """Default ip_image_preprocess "original": the original's PIL CLIP preprocessing, so the IP tokens agree."""
    case, tryon_unet, _, repo = layout_case
    with torch.no_grad():
        cond, uncond = reference_ip_tokens(repo, tryon_unet, case.garment_pixels)
    assert (case.result.state.ip_cond - cond).abs().max().item() <= 1e-4
    assert (case.result.state.ip_uncond - uncond).abs().max().item() <= 1e-4


def test_comfyui_ip_preprocessing_is_an_option_that_differs_from_the_original(layout_case, pack):
    from comfyui_tryon.pipeline.idm_vton_apply import ip_image_tokens

    case, tryon_unet, _, repo = layout_case
    with torch.no_grad():
        cond, _ = reference_ip_tokens(repo, tryon_unet, case.garment_pixels)
    import nodes

    (vision,) = nodes.CLIPVisionLoader().load_clip("tiny_clip_vision.safetensors")
    comfyui, _ = ip_image_tokens(case.tryon, vision, case.garment_pixels, "comfyui")
    original, _ = ip_image_tokens(case.tryon, vision, case.garment_pixels, "original")
    assert (original - case.result.state.ip_cond).abs().max().item() == 0  # the apply node's default
    assert (comfyui - cond).abs().max().item() > 10 * (original - cond).abs().max().item()


def test_garment_features_match_the_reference(layout_case):
    from comfyui_tryon.attention.garment_features import garment_features

    case, _, garment_unet, _ = layout_case
    state = case.result.state
    timestep = torch.tensor([600.0])
    ours = garment_features(case.garment.model.diffusion_model, state.garment_latent, timestep, case.garment_cond[0][0], state.wanted)
    reference = garment_features_reference(garment_unet, state.garment_latent, timestep, case.garment_cond[0][0])
    assert len(state.wanted) == len(reference) == 70
    worst = max((ours[key] - ref).abs().max().item() for key, ref in zip(state.wanted, reference, strict=True))
    assert worst <= 1e-4, worst


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["cond-first", "uncond-first"])
def test_tryon_eps_on_a_cfg_batch_matches_the_reference(layout_case, order):
    case = layout_case[0]
    ms = case.result.model.model.model_sampling
    sigma = ms.sigmas[600].reshape(1)
    x = torch.randn(1, 4, case.height // 8, case.width // 8, generator=torch.Generator().manual_seed(7)) * sigma
    with torch.no_grad():
        ours = dict(zip(order, comfy_eps(case, x, sigma, order), strict=True))
        eps_uncond, eps_cond = reference_eps(case, layout_case, x / math.sqrt(sigma.item() ** 2 + 1), ms.timestep(sigma).item())
    assert (ours[0] - eps_cond).abs().max().item() <= 1e-4
    assert (ours[1] - eps_uncond).abs().max().item() <= 1e-4
    assert (eps_cond - eps_uncond).abs().max().item() > 1e-3  # the halves really differ (garment + IP + text)


def test_four_step_sampling_matches_the_reference(layout_case):
    import comfy.sample
    import comfy.samplers

    case = layout_case[0]
    ms = case.result.model.model.model_sampling
    sigmas = torch.cat([ms.sigmas[TIMESTEPS], torch.zeros(1)])
    noise = torch.randn(1, 4, case.height // 8, case.width // 8, generator=torch.Generator().manual_seed(3))
    cfg = 2.0
    with torch.no_grad():
        ours = comfy.sample.sample_custom(
            case.result.model,
            noise,
            cfg,
            comfy.samplers.sampler_object("euler"),
            sigmas,
            case.result.positive,
            case.result.negative,
            torch.zeros_like(noise),
            seed=0,
        )
        x = noise * sigmas[0]
        for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:], strict=True):
            eps_uncond, eps_cond = reference_eps(case, layout_case, x / math.sqrt(sigma.item() ** 2 + 1), ms.timestep(sigma).item())
            x = x + (eps_uncond + cfg * (eps_cond - eps_uncond)) * (next_sigma - sigma)
    reference = case.result.model.model.process_latent_out(x)
    assert (ours - reference).abs().max().item() <= 1e-3
    assert case.result.bank.features == {}  # the feature bank is freed after sampling


def test_reference_attention_patch_equals_literal_concat_and_slice_block_by_block(layout_case):
    """With the same features, every attn1 equals attention over 2N tokens sliced to N."""
    from comfyui_tryon.attention.reference_attention import reference_context

    case = layout_case[0]
    unet = case.tryon.model.diffusion_model
    generator = torch.Generator().manual_seed(11)
    checked = 0
    for key in case.result.state.wanted:
        name, number, index = key
        blocks = {"input": unet.input_blocks, "output": unet.output_blocks}
        module = unet.middle_block if name == "middle" else blocks[name][number]
        transformer = next(layer for layer in module if hasattr(layer, "transformer_blocks")).transformer_blocks[index]
        width = transformer.norm1.normalized_shape[0]
        n = torch.randn(4, 12, width, generator=generator)
        garment = torch.randn(1, 12, width, generator=generator)
        for order in ([0, 1], [1, 0], [0]):
            x = n[: 2 * len(order)]
            context = reference_context(x, garment, order)
            ours = transformer.attn1(x, context=context, value=context)
            literal = transformer.attn1(context)[:, : x.shape[1]]
            assert (ours - literal).abs().max().item() <= 1e-5
        checked += 1
    assert checked == 70
