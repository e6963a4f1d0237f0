"""Our ComfyUI-native OOTDiffusion against the independent literal reference on diffusers (fp32, tiny random weights).

Same weights on both sides (the official folder layout read by our loader and by diffusers); the reference follows
the original's code path literally: garment UNet run to its end on [garment, zeros] at t=0, fusion over cat([h, g])
keeping the first half, CFG [cond, uncond], diffusers' UniPC / DDIM, the repaint after every step.
"""

from __future__ import annotations

import types

import pytest
import reference_ootd
import torch
from ootd_setup import apply, fixture_models_dir, images, load_comfy_models, load_reference_models

STEPS = 4
GUIDANCE = 2.0
SEED = 3


@pytest.fixture(scope="module")
def ootd(pack, fixture_models):
    models = fixture_models_dir(fixture_models)
    return models, load_comfy_models(models, "dc"), load_reference_models(models, "dc")


@pytest.fixture(scope="module")
def dc_case(ootd):
    _, comfy_models, _ = ootd
    return apply(comfy_models, "dc", "lower_body")


def reference_context(reference, case, model_type, category):
    with torch.no_grad():
        embeds = reference_ootd.image_embeds(reference.vision, case.garment)
        return reference_ootd.conditioning_tokens(reference.text, embeds, model_type, category)


@pytest.mark.parametrize(("model_type", "category"), [("hd", "upper_body"), ("dc", "upper_body"), ("dc", "lower_body"), ("dc", "dresses")])
def test_conditioning_tokens_match_the_original(ootd, model_type, category):
    _, comfy_models, reference = ootd
    from comfyui_tryon.pipeline.ootd_apply import conditioning_context

    _, _, garment = images()
    ours = conditioning_context(comfy_models.clip, comfy_models.vision, garment, model_type, category, 32)
    expected = reference_context(reference, types.SimpleNamespace(garment=garment), model_type, category)
    assert ours.shape == expected.shape == (1, 2 if model_type == "hd" else 4, 32)
    assert (ours - expected).abs().max().item() <= 1e-4


def test_dc_category_words_are_truncated_to_their_first_token(pack):
    """upperbody -> [BOS, 'upper' (the piece, id 22465, not the word 'upper' 7067), EOS], as the original's truncation."""
    tokenizer = reference_ootd.tokenizer()
    ids = {word: tokenizer([word], max_length=3, padding="max_length", truncation=True).input_ids[0] for word in reference_ootd.CATEGORY_WORDS.values()}
    assert ids == {"upperbody": [49406, 22465, 49407], "lowerbody": [49406, 32578, 49407], "dress": [49406, 2595, 49407]}


def test_garment_features_match_the_reference(ootd, dc_case):
    """All 16 block inputs, for the garment latent and the all-zero latent, at t=0."""
    from comfyui_tryon.attention.garment_features import garment_features
    from comfyui_tryon.attention.reference_spec import CapturePoint

    _, comfy_models, reference = ootd
    result = dc_case.result
    blocks = list(result.bank.spec.blocks)
    latent = torch.cat([result.garment_latent, torch.zeros_like(result.garment_latent)])
    context = torch.cat([result.context, result.context])
    with torch.no_grad():
        ours = garment_features(comfy_models.garm.model.diffusion_model, latent, torch.zeros(2), context, blocks, CapturePoint.BLOCK_INPUT)
        expected = reference_ootd.garment_features(reference.garm, result.garment_latent, result.context)
    assert len(blocks) == len(expected) == 16
    worst = max((ours[key] - ref).abs().max().item() for key, ref in zip(blocks, expected, strict=True))
    assert worst <= 1e-4, worst
    assert (expected[0][0] - expected[0][1]).abs().max().item() > 1e-3  # the zero latent's features are not the garment's


def comfy_eps(result, x, sigma, order):
    """eps of the patched MODEL on a batch of chunks in the given cond(0)/uncond(1) order (as ComfyUI batches them)."""
    import comfy.model_management

    patched = result.model
    comfy.model_management.load_models_gpu([patched])
    conds = {0: result.positive[0], 1: result.negative[0]}
    context = torch.cat([conds[k][0] for k in order])
    concat = torch.cat([conds[k][1]["concat_latent_image"] for k in order])
    options = dict(patched.model_options["transformer_options"])
    options["wrappers"] = patched.wrappers
    options["cond_or_uncond"] = list(order)
    x_in = x.repeat(len(order), 1, 1, 1)
    denoised = patched.model.apply_model(x_in, sigma.repeat(x_in.shape[0]), c_concat=concat, c_crossattn=context, transformer_options=options)
    return ((x_in - denoised) / sigma).chunk(len(order))


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["cond-first", "uncond-first"])
def test_cfg_batch_eps_matches_the_reference(ootd, dc_case, order):
    _, _, reference = ootd
    result = dc_case.result
    ms = result.model.model.model_sampling
    timestep = 640
    sigma = ms.sigmas[timestep].reshape(1)
    x = torch.randn(result.latent["samples"].shape, generator=torch.Generator().manual_seed(7)) * sigma
    with torch.no_grad():
        ours = dict(zip(order, comfy_eps(result, x, sigma, order), strict=True))
        blocks = reference_ootd.install_fusion(reference.vton)
        features = reference_ootd.garment_features(reference.garm, result.garment_latent, result.context)
        x_vp = x / (1 + sigma**2).sqrt()
        masked = result.positive[0][1]["concat_latent_image"]
        eps_cond, eps_uncond = reference_ootd.cfg_eps(reference.vton, blocks, x_vp, masked, result.context, features, torch.tensor(timestep))
    assert (ours[0] - eps_cond).abs().max().item() <= 1e-4
    assert (ours[1] - eps_uncond).abs().max().item() <= 1e-4
    assert (eps_cond - eps_uncond).abs().max().item() > 1e-3  # the halves really differ (garment vs zero-latent features)


def test_each_pair_of_a_b_by_b_batch_gets_its_own_garment_features_in_both_halves(ootd):
    """Two persons x two garments in one batch: each pair's cond and uncond eps equal the reference run on that pair
    alone (the uncond half uses the zero latent with that pair's own garment tokens, as the original's [pe, pe])."""
    _, comfy_models, reference = ootd
    result = apply(comfy_models, "dc", "upper_body", persons=2, garments=2).result
    assert result.context.shape[0] == 2 and (result.context[0] - result.context[1]).abs().max().item() > 1e-3
    ms = result.model.model.model_sampling
    timestep = 480
    sigma = ms.sigmas[timestep].reshape(1)
    x = torch.randn(result.latent["samples"].shape, generator=torch.Generator().manual_seed(11)) * sigma
    with torch.no_grad():
        ours_cond, ours_uncond = comfy_eps(result, x, sigma, (0, 1))
        blocks = reference_ootd.install_fusion(reference.vton)
        masked = result.positive[0][1]["concat_latent_image"]
        for pair in range(2):
            one = slice(pair, pair + 1)
            features = reference_ootd.garment_features(reference.garm, result.garment_latent[one], result.context[one])
            x_vp = x[one] / (1 + sigma**2).sqrt()
            eps_cond, eps_uncond = reference_ootd.cfg_eps(reference.vton, blocks, x_vp, masked[one], result.context[one], features, torch.tensor(timestep))
            assert (ours_cond[one] - eps_cond).abs().max().item() <= 1e-4, pair
            assert (ours_uncond[one] - eps_uncond).abs().max().item() <= 1e-4, pair


@pytest.mark.parametrize("mode", ["unipc", "ddim"])
def test_four_step_runs_with_the_repaint_match_the_reference(ootd, dc_case, mode):
    import comfy.sample
    from comfyui_tryon.pipeline.ootd_sampling import ootd_sampler, ootd_sigmas
    from comfyui_tryon.preprocess.ootd_inputs import binarize_mask

    _, _, reference = ootd
    result = dc_case.result
    latent = result.latent
    sigmas = ootd_sigmas(result.model, STEPS, "karras" if mode == "unipc" else "ddim")
    noise = comfy.sample.prepare_noise(latent["samples"], SEED)
    with torch.no_grad():
        sampler = ootd_sampler(mode)
        ours = comfy.sample.sample_custom(
            result.model, noise, GUIDANCE, sampler, sigmas, result.positive, result.negative, latent["samples"], noise_mask=latent["noise_mask"], seed=SEED
        )
        expected = reference_ootd.sample(
            reference.vton,
            reference.garm,
            garment_latent=result.garment_latent,
            vton_latent=result.positive[0][1]["concat_latent_image"],
            original_latent=latent["samples"],  # the person latent; the original uses it outside the mask only
            mask=binarize_mask(dc_case.mask),
            prompt_embeds=result.context,
            steps=STEPS,
            guidance=GUIDANCE,
            seed=SEED,
            scheduler=mode,
        )
    ours_scaled = ours * reference_ootd.VAE_SCALING  # both in the original's latent space (what it decodes / 0.18215)
    assert (ours_scaled - expected).abs().max().item() <= 1e-3, (ours_scaled - expected).abs().max().item()
    assert result.bank.features == {} and result.bank.reference_passes >= 1  # the features are freed after sampling
