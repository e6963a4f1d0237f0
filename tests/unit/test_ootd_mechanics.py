"""How the OOTDiffusion MODEL behaves inside ComfyUI: loading, stock samplers, CFG layouts, batches, clear errors."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from ootd_setup import apply, fixture_models_dir, images, load_comfy_models, unet_path


@pytest.fixture(scope="module")
def models_dir(pack, fixture_models):
    return fixture_models_dir(fixture_models)


@pytest.fixture(scope="module")
def hd(models_dir):
    return load_comfy_models(models_dir, "hd")


def run_ksampler(case, sampler="euler", scheduler="normal", steps=2, cfg=2.0, seed=1):
    import nodes

    r = case.result
    return nodes.common_ksampler(r.model, seed, steps, cfg, sampler, scheduler, r.positive, r.negative, r.latent)[0]["samples"]


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def test_stock_detection_takes_the_real_unet_garm_but_not_the_real_unet_vton(pack):
    """At the real sizes (meta tensors): ComfyUI's diffusers detection knows SD1.5 with 4 channels, not with 8."""
    import comfy.model_detection
    import fixtures_ootd

    def diffusers_state(channels):
        return {k: torch.empty(shape, device="meta") for k, shape in fixtures_ootd.real_unet_keys(channels).items()}

    assert type(comfy.model_detection.model_config_from_diffusers_unet(diffusers_state(4))).__name__ == "SD15"
    assert comfy.model_detection.model_config_from_diffusers_unet(diffusers_state(8)) is None


def test_fixture_unets_have_the_official_key_names(models_dir):
    import fixtures_ootd

    for part, channels in (("vton", 8), ("garm", 4)):
        stored = safetensors.torch.load_file(unet_path(models_dir, "dc", part))
        assert set(stored) == set(fixtures_ootd.real_unet_keys(channels)) and len(stored) == 686
        config = json.loads((fixtures_ootd.unet_folder(models_dir / "diffusion_models", "dc", part) / "config.json").read_text())
        assert config["in_channels"] == channels and config["attention_head_dim"] == 8 and config["use_linear_projection"] is False


def test_the_loader_builds_sd15_instruct_pix2pix_for_vton_and_sd15_for_garm(hd):
    import comfy.model_base
    import comfy.supported_models

    assert isinstance(hd.vton.model, comfy.model_base.SD15_instructpix2pix)
    assert hd.vton.model.diffusion_model.input_blocks[0][0].in_channels == 8
    assert isinstance(hd.garm.model.model_config, comfy.supported_models.SD15)
    assert hd.garm.model.diffusion_model.input_blocks[0][0].in_channels == 4
    assert hd.vton.model.model_config.unet_config["num_heads"] == 8


def test_unet_vton_matches_diffusers_on_the_same_weights(models_dir, hd):
    """One plain forward (no garment features): our loader's unet_vton equals diffusers' on the same file."""
    import fixtures_ootd

    reference = fixtures_ootd.load_unet(models_dir / "diffusion_models", "hd", "vton")
    generator = torch.Generator().manual_seed(0)
    x, concat = torch.randn(1, 4, 16, 12, generator=generator), torch.randn(1, 4, 16, 12, generator=generator)
    context = torch.randn(1, 4, 32, generator=generator)
    ms = hd.vton.model.model_sampling
    sigma = ms.sigmas[500].reshape(1)
    with torch.no_grad():
        denoised = hd.vton.model.apply_model(x * (1 + sigma**2).sqrt(), sigma, c_concat=concat, c_crossattn=context)
        ours = (x * (1 + sigma**2).sqrt() - denoised) / sigma
        expected = reference(torch.cat([x, concat], dim=1), 500, encoder_hidden_states=context).sample
    assert (ours - expected).abs().max().item() <= 1e-4


def test_single_files_load_like_the_official_folder(pack, models_dir, hd, tmp_path):
    """A ComfyUI-named single file (e.g. a converted one) through our loader and through the stock UNETLoader."""
    import comfy.model_base
    import comfy.sd
    from comfyui_tryon.models.ootd_unet import load_ootd_unet

    comfy_sd = {"model.diffusion_model." + k: v for k, v in hd.vton.model.diffusion_model.state_dict().items()}
    path = tmp_path / "ootd_hd_unet_vton.safetensors"
    safetensors.torch.save_file({k: v.half().contiguous() for k, v in comfy_sd.items()}, str(path))
    ours = load_ootd_unet(str(path))
    stock = comfy.sd.load_diffusion_model(str(path))  # the tiny sizes are registered for the stock loader (test-only)
    for model in (ours, stock):
        assert isinstance(model.model, comfy.model_base.SD15_instructpix2pix)
        weights = model.model.diffusion_model.state_dict()
        assert all(torch.equal(weights[k].float(), v.half().float()) for k, v in hd.vton.model.diffusion_model.state_dict().items())


def test_loader_refuses_other_models_with_clear_errors(pack, fixture_models, tmp_path):
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.models.ootd_unet import build_ootd_unet

    root = fixture_models.parent / "models"
    sdxl_unet = safetensors.torch.load_file(str(root / "idm_vton" / "IDM-VTON-tiny-fast" / "unet_encoder" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(TryOnInputError, match="SDXL"):
        build_ootd_unet(sdxl_unet, input_name="unet_name")
    checkpoint = safetensors.torch.load_file(str(root / "checkpoints" / "tiny_sdxl_fast.safetensors"))
    with pytest.raises(TryOnInputError, match="full Stable Diffusion checkpoint"):
        build_ootd_unet(checkpoint, input_name="unet_name")
    with pytest.raises(TryOnInputError, match="unet_name: these weights are not a UNet"):
        build_ootd_unet({"weight": torch.zeros(2)}, input_name="unet_name")


# ----------------------------------------------------------------------------------------------
# Sampling inside ComfyUI
# ----------------------------------------------------------------------------------------------
STOCK = [("euler", "normal", True), ("dpmpp_2m", "karras", True), ("uni_pc_bh2", "simple", False), ("ddim", "ddim_uniform", True)]


@pytest.mark.parametrize(("sampler", "scheduler", "ends_on_denoised"), STOCK)
def test_stock_samplers_run_with_one_garment_pass_per_run(hd, sampler, scheduler, ends_on_denoised):
    case = apply(hd)
    out = run_ksampler(case, sampler, scheduler, steps=3)
    assert torch.isfinite(out).all()
    bank = case.result.bank
    assert bank.reference_passes == 1 and bank.features == {}  # once per sampling run at t=0, freed afterwards
    if ends_on_denoised:  # ComfyUI's noise_mask: the model output outside is the person latent, and these end on it
        mask, person = case.result.latent["noise_mask"], case.result.latent["samples"]
        assert torch.allclose(out * (1 - mask), person * (1 - mask), atol=1e-4)


def test_cfg_one_runs_without_an_uncond_chunk(hd):
    case = apply(hd)
    out = run_ksampler(case, cfg=1.0)
    assert torch.isfinite(out).all() and case.result.bank.reference_passes == 1


def test_split_cond_and_uncond_batches_give_the_same_result(hd, monkeypatch):
    together = run_ksampler(apply(hd))
    case = apply(hd)
    monkeypatch.setattr(case.result.model.model, "memory_required", lambda *a, **k: float("inf"))  # ComfyUI then runs cond and uncond apart
    split = run_ksampler(case)
    assert (together - split).abs().max().item() <= 1e-5 * together.abs().max().item()


@pytest.mark.parametrize(("persons", "garments"), [(2, 1), (2, 2)])
def test_batches_of_persons_and_garments(hd, persons, garments):
    import comfy.sample
    from comfyui_tryon.pipeline.ootd_sampling import ootd_sampler, ootd_sigmas

    case = apply(hd, persons=persons, garments=garments)
    r = case.result
    assert r.latent["samples"].shape[0] == persons and r.context.shape[0] == garments and r.garment_latent.shape[0] == garments
    noise = comfy.sample.prepare_noise(r.latent["samples"], 0)
    sampler, sigmas = ootd_sampler("unipc"), ootd_sigmas(r.model, 2)
    latent, mask = r.latent["samples"], r.latent["noise_mask"]
    out = comfy.sample.sample_custom(r.model, noise, 2.0, sampler, sigmas, r.positive, r.negative, latent, noise_mask=mask, seed=0)
    assert out.shape[0] == persons and torch.isfinite(out).all()
    if garments == 1:  # one garment for two persons: the same features and tokens serve both
        assert r.bank.features == {}


def test_batch_mismatch_is_a_clear_error(hd):
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.pipeline.ootd_apply import apply_ootd

    person, mask, _ = images(persons=2)
    _, _, garment = images(garments=3)
    with pytest.raises(TryOnInputError, match="batch"):
        apply_ootd(hd.vton, hd.garm, hd.vae, hd.clip, hd.vision, person, mask, garment, "hd", "upper_body")


def test_clone_shares_the_bank(hd):
    from comfyui_tryon.pipeline.ootd_apply import ootd_bank

    case = apply(hd)
    clone = case.result.model.clone()
    assert ootd_bank(clone) is case.result.bank
    assert hd.garm in clone.model_patches_models()  # unet_garm loads together with unet_vton


def test_a_latent_of_another_batch_than_the_apply_nodes_is_a_clear_error(hd):
    from comfyui_tryon.errors import TryOnInputError

    import nodes

    r = apply(hd, persons=2, garments=2).result
    repeated = {"samples": r.latent["samples"].repeat(2, 1, 1, 1), "noise_mask": r.latent["noise_mask"].repeat(2, 1, 1, 1)}
    with pytest.raises(TryOnInputError, match="latent_image: batch 4, but 'OOTDiffusion Apply' prepared 2 try-ons"):
        nodes.common_ksampler(r.model, 0, 1, 2.0, "euler", "normal", r.positive, r.negative, repeated)
    smaller = {"samples": r.latent["samples"][..., :-8, :]}
    with pytest.raises(TryOnInputError, match="latent_image: size"):
        nodes.common_ksampler(r.model, 0, 1, 2.0, "euler", "normal", r.positive, r.negative, smaller)
    single = apply(hd).result  # one pair, four samples from a repeated latent: fine (the pair's inputs serve each)
    four = {"samples": single.latent["samples"].repeat(4, 1, 1, 1), "noise_mask": single.latent["noise_mask"].repeat(4, 1, 1, 1)}
    out = nodes.common_ksampler(single.model, 0, 1, 2.0, "euler", "normal", single.positive, single.negative, four)[0]["samples"]
    assert out.shape[0] == 4 and torch.isfinite(out).all()


def test_vton_without_the_apply_node_says_what_to_wire(hd):
    from comfyui_tryon.errors import TryOnInputError

    import nodes

    positive = [[torch.zeros(1, 2, 32), {}]]
    with pytest.raises(TryOnInputError, match="OOTDiffusion Apply"):
        nodes.common_ksampler(hd.vton, 0, 1, 1.0, "euler", "normal", positive, positive, {"samples": torch.zeros(1, 4, 32, 24)})


# ----------------------------------------------------------------------------------------------
# Clear errors for wrong inputs
# ----------------------------------------------------------------------------------------------
def test_swapped_or_wrong_models_give_clear_errors(hd):
    import fixtures_ootd
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.models.ootd_unet import build_ootd_unet
    from comfyui_tryon.pipeline.ootd_apply import apply_ootd
    from diffusers import UNet2DConditionModel
    from tiny_models import _randomize

    import nodes

    person, mask, garment = images()
    sdxl_model, sdxl_clip = nodes.CheckpointLoaderSimple().load_checkpoint("tiny_sdxl_fast.safetensors")[:2]
    cases = [
        ((hd.garm, hd.vton), "swapped"),
        ((sdxl_model, hd.garm), "vton_model: this MODEL is not OOTDiffusion's unet_vton"),
        ((hd.vton, sdxl_model), "garment_model: this is an SDXL-style UNet"),
        ((hd.vton, hd.vton), "garment_model: this UNet has 8 input channels"),
    ]
    for (vton, garm), message in cases:
        with pytest.raises(TryOnInputError, match=message):
            apply_ootd(vton, garm, hd.vae, hd.clip, hd.vision, person, mask, garment, "hd", "upper_body")
    other_width = UNet2DConditionModel(**fixtures_ootd.unet_kwargs(4, cross_attention_dim=48))  # e.g. an SD2 UNet
    _randomize(other_width, torch.Generator().manual_seed(0))
    wide_garm = build_ootd_unet(dict(other_width.state_dict()))
    with pytest.raises(TryOnInputError, match="garment_model: its cross-attention takes 48-wide text tokens, unet_vton's 32"):
        apply_ootd(hd.vton, wide_garm, hd.vae, hd.clip, hd.vision, person, mask, garment, "hd", "upper_body")
    with pytest.raises(TryOnInputError, match="clip: this text encoder has the parts"):
        apply_ootd(hd.vton, hd.garm, hd.vae, sdxl_clip, hd.vision, person, mask, garment, "hd", "upper_body")


@pytest.mark.parametrize("category", ["lower_body", "dresses"])
def test_hd_takes_upper_body_only(hd, category):
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.pipeline.ootd_apply import apply_ootd

    person, mask, garment = images()
    with pytest.raises(TryOnInputError, match="category: the hd model"):
        apply_ootd(hd.vton, hd.garm, hd.vae, hd.clip, hd.vision, person, mask, garment, "hd", category)


def test_a_clip_vision_of_the_wrong_width_is_a_clear_error(hd, tmp_path):
    import comfy.clip_vision
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.pipeline.ootd_apply import apply_ootd
    from tiny_models import tiny_clip_vision_json

    config = tiny_clip_vision_json(tmp_path / "vision.json")
    config.write_text(config.read_text().replace('"projection_dim": 32', '"projection_dim": 48'))
    wide = comfy.clip_vision.ClipVisionModel(str(config))  # e.g. ViT-H/14 (1024) where ViT-L/14 (768) belongs
    person, mask, garment = images()
    with pytest.raises(TryOnInputError, match="clip_vision: this vision model gives 48-wide image embeddings; OOTDiffusion needs 32"):
        apply_ootd(hd.vton, hd.garm, hd.vae, hd.clip, wide, person, mask, garment, "hd", "upper_body")


def test_mask_is_binarised_at_127_and_the_masked_person_is_grey_127(pack):
    from comfyui_tryon.preprocess.ootd_inputs import prepare_ootd_pixels

    person, _, garment = images(height=64, width=64)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 127 / 255
    mask[:, :, 32:40] = 126 / 255
    pixels = prepare_ootd_pixels(person, mask, garment)
    assert torch.equal(pixels.mask[0, 0], torch.tensor([1.0] * 32 + [0.0] * 32))
    assert torch.all(pixels.masked_person[0, :, :32] == 127 / 255)
    assert torch.equal(pixels.masked_person[0, :, 32:], person[0, :, 32:])
