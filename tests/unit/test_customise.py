"""IDM-VTON Customise: the decoder LoRA trains, saves in the stock format, and leaves every input as it was."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from tryon_setup import load_models


@pytest.fixture(scope="module")
def fast_models(pack, fast_repo):
    return load_models(fast_repo)


@pytest.fixture(scope="module")
def stock(pack):
    """The tiny checkpoint's CLIP and VAE, the CLIP vision model, and the three prompts."""
    import nodes

    _, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint("tiny_sdxl_fast.safetensors")[:3]
    (vision,) = nodes.CLIPVisionLoader().load_clip("tiny_clip_vision.safetensors")
    encode = lambda text: nodes.CLIPTextEncode().encode(clip, text)[0]  # noqa: E731
    return {
        "vae": vae,
        "vision": vision,
        "positive": encode("model is wearing short sleeve round neck t-shirts"),
        "negative": encode("monochrome, lowres"),
        "garment_cond": encode("a photo of short sleeve round neck t-shirts"),
    }


@pytest.fixture
def lora_folder(pack, tmp_path, monkeypatch):
    """A fresh models/loras folder, first in ComfyUI's `loras` list (where the node saves)."""
    import folder_paths

    folder = tmp_path / "loras"
    folder.mkdir()
    paths, extensions = folder_paths.folder_names_and_paths["loras"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(folder)] + list(paths), extensions))
    folder_paths.filename_list_cache.pop("loras", None)
    yield folder
    folder_paths.filename_list_cache.pop("loras", None)


PAIR_SIZE = (128, 96)  # height, width


def pair_images(seed: int = 0, size=PAIR_SIZE):
    """A person photo, the mask of its garment, a DensePose image and the garment photo (random, on the 1/255 grid)."""
    height, width = size
    generator = torch.Generator().manual_seed(seed)
    person = (torch.rand(1, height, width, 3, generator=generator) * 255).round() / 255
    mask = torch.zeros(1, height, width)
    mask[:, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
    densepose = torch.rand(1, height, width, 3, generator=generator)
    garment = (torch.rand(1, height, width, 3, generator=generator) * 255).round() / 255
    return person, mask, densepose, garment


def apply(tryon, garment_model, stock, images, **options):
    from comfyui_tryon.pipeline.idm_vton_apply import apply_idm_vton

    person, mask, densepose, garment = images
    inputs = stock["garment_cond"], stock["vae"], person, mask, densepose, garment, stock["vision"], stock["positive"], stock["negative"]
    return apply_idm_vton(tryon, garment_model, *inputs, **options)


FAST_TRAINING = {"steps": 4, "learning_rate": 1e-3, "rank": 4}


def customise(prepared, stock, person, **settings):
    from comfyui_tryon.pipeline.idm_vton_customise import customise_idm_vton

    return customise_idm_vton(prepared.model, prepared.positive, stock["vae"], person, **{**FAST_TRAINING, **settings})


def fixed_pairs(count: int = 8, seed: int = 123, shape=(1, 4, 16, 12)):
    generator = torch.Generator().manual_seed(seed)
    timesteps = [int(t) for t in torch.linspace(30, 970, count)]
    return [(t, torch.randn(shape, generator=generator)) for t in timesteps]


def eps_losses(prepared, stock, person, pairs) -> float:
    """The mean eps loss of a prepared MODEL on fixed (t, noise) pairs, computed the way training computes it."""
    from comfyui_tryon.pipeline.idm_vton_customise import eps_loss, prepare_pair, with_eps_model

    def evaluate(eps):
        with torch.no_grad():
            return sum(float(eps_loss(eps(t, noise), noise)) for t, noise in pairs) / len(pairs)

    with torch.inference_mode(False):
        return with_eps_model(prepare_pair(prepared.model, prepared.positive, stock["vae"], person), evaluate)


def model_weights(patcher) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in patcher.model.state_dict().items()}


def sample(prepared, seed: int = 3, steps: int = 2):
    import nodes

    return nodes.common_ksampler(prepared.model, seed, steps, 2.0, "euler", "normal", prepared.positive, prepared.negative, prepared.latent)[0]["samples"]


# --- what training does --------------------------------------------------------------------------------------------
def test_training_lowers_the_eps_loss_on_fixed_pairs_below_0_8x(fast_models, stock, lora_folder):
    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    pairs = fixed_pairs()
    before = eps_losses(prepared, stock, images[0], pairs)
    result = customise(prepared, stock, images[0], steps=40, learning_rate=2e-3, rank=8)
    after = eps_losses(apply(result.model, garment_model, stock, images), stock, images[0], pairs)
    assert after < 0.8 * before, (before, after)
    assert len(result.loss_map["loss"]) == 40 and all(isinstance(v, float) for v in result.loss_map["loss"])


def test_garment_net_runs_once_per_step_at_the_step_timestep_and_the_bank_is_empty_after(fast_models, stock, lora_folder, monkeypatch):
    import comfy.utils
    from comfyui_tryon.attention import reference_bank

    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    timesteps = []
    compute = reference_bank.ReferenceFeatureBank.compute_features
    monkeypatch.setattr(reference_bank.ReferenceFeatureBank, "compute_features", lambda self, t, like: timesteps.append(t) or compute(self, t, like))
    drawn = []
    from comfyui_tryon.pipeline import idm_vton_customise

    draw = idm_vton_customise.draw_timestep_and_noise
    monkeypatch.setattr(idm_vton_customise, "draw_timestep_and_noise", lambda *a: drawn.append(draw(*a)) or drawn[-1])
    progress = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: progress.append((value, total)))
    customise(prepared, stock, images[0], steps=5)
    assert prepared.bank.reference_passes == 5
    assert progress == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]  # ComfyUI's progress bar advances once per step
    ms = prepared.model.get_model_object("model_sampling")
    assert timesteps == [float(ms.timestep(ms.sigmas[t].reshape(1))) for t, _ in drawn]  # GarmentNet at each step's own timestep
    assert prepared.bank.live_state() == {"feature_tensors": 0, "step_depth": 0, "run_timestep_set": False}


def test_gradients_with_and_without_checkpointing_are_equal_and_a_shared_transformer_options_would_break_them(fast_models, stock, monkeypatch):
    from comfyui_tryon.attention import checkpointing
    from comfyui_tryon.attention.decoder_lora import DecoderLoRA
    from comfyui_tryon.pipeline.idm_vton_customise import backward_step, prepare_pair, training_session, with_eps_model

    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    t, noise = 600, torch.randn(1, 4, 16, 12, generator=torch.Generator().manual_seed(5))

    def gradients(enabled: bool):
        with torch.inference_mode(False):
            pair = prepare_pair(prepared.model, prepared.positive, stock["vae"], images[0])
            lora = DecoderLoRA.create(tryon.model.diffusion_model, "all decoder layers", 4, seed=1)
            for adapter in lora.adapters.values():  # up is zero at the start: make every parameter get a gradient
                adapter.up.data.normal_(generator=torch.Generator().manual_seed(2))

            def body(eps):
                with training_session(pair, lora, enabled):
                    backward_step(eps, pair, t, noise)
                return [p.grad.clone() for p in lora.parameters()]

            return with_eps_model(pair, body)

    plain, checkpointed = gradients(False), gradients(True)
    assert all(torch.equal(a, b) for a, b in zip(plain, checkpointed, strict=True))
    assert any(float(g.abs().max()) > 0 for g in plain)
    # ComfyUI's stock trainer recomputes with the one shared transformer_options dict, which by then names the last
    # block: the block-keyed garment and IP attention are skipped in the recomputation, which saves other tensors
    monkeypatch.setattr(checkpointing, "_snapshot", lambda value: value)
    with pytest.raises(torch.utils.checkpoint.CheckpointError):
        gradients(True)


def test_it_trains_on_fp8_stored_weights(pack, fast_repo, stock, lora_folder):
    from comfyui_tryon.models.garment_net import build_garment_model
    from comfyui_tryon.models.tryon_net import build_tryon_model
    from comfyui_tryon.models.weights_io import read_state_dict

    tryon = build_tryon_model(read_state_dict(str(fast_repo / "unet" / "diffusion_pytorch_model.bin"), "t"), "fp8_e4m3fn")
    garment_model = build_garment_model(read_state_dict(str(fast_repo / "unet_encoder" / "diffusion_pytorch_model.safetensors"), "g"), "fp8_e4m3fn")
    assert tryon.model_dtype() == torch.float8_e4m3fn
    images = pair_images()
    result = customise(apply(tryon, garment_model, stock, images), stock, images[0], steps=2)
    assert all(math.isfinite(v) for v in result.loss_map["loss"]) and result.lora.parameter_count() > 0


# --- the file and the MODEL ----------------------------------------------------------------------------------------
def test_the_file_holds_only_decoder_keys_in_the_stock_format_with_metadata(fast_models, stock, lora_folder):
    import safetensors

    tryon, garment_model = fast_models
    images = pair_images()
    result = customise(apply(tryon, garment_model, stock, images), stock, images[0], seed=7)
    assert result.lora_name == "idm_vton_customised_00001.safetensors"
    assert (lora_folder / result.lora_name).is_file()
    with safetensors.safe_open(str(lora_folder / result.lora_name), "pt") as file:
        keys, metadata = list(file.keys()), file.metadata()
    assert keys and all(key.startswith("diffusion_model.output_blocks.") for key in keys)
    assert {key.rsplit(".", 2)[-2] if key.endswith(".weight") else key.rsplit(".", 1)[-1] for key in keys} == {"lora_up", "lora_down", "alpha"}
    assert not any("ip_adapter" in key or "ip_resampler" in key or "input_blocks" in key or "middle_block" in key for key in keys)
    assert metadata["base_model"].startswith("IDM-VTON TryonNet") and len(metadata["base_model_conv_in_sha256"]) == 64
    assert (metadata["steps"], metadata["rank"], metadata["seed"], metadata["size"]) == ("4", "4", "7", "96x128")
    assert float(metadata["learning_rate"]) == 1e-3 and metadata["target"] == "all decoder layers"


def test_attention_target_adapts_only_the_decoder_attention_projections(pack, fast_models):
    from comfyui_tryon.attention.decoder_lora import decoder_layers

    unet = fast_models[0].model.diffusion_model
    attention = decoder_layers(unet, "decoder attention layers")
    every = decoder_layers(unet, "all decoder layers")
    assert attention and set(attention) < set(every)
    assert all(name.startswith("output_blocks.") and name.rsplit(".", 2)[-2:][0] in ("attn1", "attn2", "to_out") for name in attention)
    assert any(layer.weight.ndim == 4 for layer in every.values())  # convolutions too


def test_stock_lora_loader_then_apply_samples_bitwise_like_the_node_model(fast_models, stock, lora_folder, caplog):
    import nodes

    tryon, garment_model = fast_models
    images = pair_images()
    result = customise(apply(tryon, garment_model, stock, images), stock, images[0], steps=3)
    other_garment = pair_images(seed=9)[3]
    new_images = (*images[:3], other_garment)
    ours = sample(apply(result.model, garment_model, stock, new_images))
    with caplog.at_level(logging.WARNING):
        (loaded,) = nodes.LoraLoaderModelOnly().load_lora_model_only(tryon, result.lora_name, 1.0)
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    stock_path = sample(apply(loaded, garment_model, stock, new_images))
    assert torch.equal(ours, stock_path)
    untrained = sample(apply(tryon, garment_model, stock, new_images))
    assert not torch.equal(ours, untrained)  # the LoRA changed the model, so the comparison can tell


def test_the_node_model_has_no_try_on_patches_and_keeps_other_patches(fast_models, stock, lora_folder):
    tryon, garment_model = fast_models
    images = pair_images()
    result = customise(apply(tryon, garment_model, stock, images), stock, images[0], steps=2)
    options = result.model.model_options.get("transformer_options", {})
    assert not options.get("patches_replace") and not options.get("patches")
    assert result.model.get_attachment("idm_vton_tryon") is None
    assert not any(result.model.get_wrappers(kind, "idm_vton_tryon") for kind in list(result.model.wrappers))
    assert result.model.patches and all(key.startswith("diffusion_model.output_blocks.") for key in result.model.patches)


def test_inputs_stay_bit_identical_and_the_same_seed_gives_the_same_lora(fast_models, stock, lora_folder):
    import safetensors.torch

    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    tryon_before, garment_before = model_weights(tryon), model_weights(garment_model)
    options_before = repr(prepared.model.model_options)
    trainable_before = [p.requires_grad for p in tryon.model.parameters()]
    first = customise(prepared, stock, images[0], seed=11)
    second = customise(prepared, stock, images[0], seed=11)
    third = customise(prepared, stock, images[0], seed=12)
    for before, after in ((tryon_before, model_weights(tryon)), (garment_before, model_weights(garment_model))):
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert repr(prepared.model.model_options) == options_before and not tryon.patches
    assert all(p.grad is None for p in tryon.model.parameters())  # no gradient reached TryonNet's own weights
    assert [p.requires_grad for p in tryon.model.parameters()] == trainable_before
    assert (first.lora_name, second.lora_name) == ("idm_vton_customised_00001.safetensors", "idm_vton_customised_00002.safetensors")
    files = [safetensors.torch.load_file(str(lora_folder / r.lora_name)) for r in (first, second, third)]
    assert files[0].keys() == files[1].keys() and all(torch.equal(files[0][k], files[1][k]) for k in files[0])
    assert any(not torch.equal(files[0][k], files[2][k]) for k in files[0])
    assert first.loss_map == second.loss_map


def test_an_interrupt_stops_within_a_step_and_leaves_a_clean_model(fast_models, stock, lora_folder):
    import comfy.model_management
    from comfyui_tryon.attention.decoder_lora import LoRAWeight

    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    before = sample(prepared)
    weights_before = model_weights(tryon)
    steps_done = []

    def interrupt_after_two(step, loss):
        steps_done.append(step)
        if step == 1:
            comfy.model_management.interrupt_current_processing(True)

    from comfyui_tryon.pipeline.idm_vton_customise import customise_idm_vton

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        customise_idm_vton(prepared.model, prepared.positive, stock["vae"], images[0], steps=50, learning_rate=1e-3, rank=4, on_step=interrupt_after_two)
    comfy.model_management.interrupt_current_processing(False)
    assert steps_done == [0, 1]
    assert list(lora_folder.iterdir()) == []
    modules = list(tryon.model.modules())
    assert not any(isinstance(f, LoRAWeight) for m in modules for f in getattr(m, "weight_function", []))
    assert not any("forward" in m.__dict__ for m in modules)
    assert prepared.bank.live_state() == {"feature_tensors": 0, "step_depth": 0, "run_timestep_set": False}
    after = model_weights(tryon)
    assert all(torch.equal(weights_before[k], after[k]) for k in weights_before)
    assert torch.equal(sample(prepared), before)


# --- bad inputs ---------------------------------------------------------------------------------------------------------
def test_bad_inputs_name_the_input(fast_models, stock, lora_folder):
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.pipeline.idm_vton_customise import customise_idm_vton

    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    person = images[0]

    def error(model=prepared.model, positive=prepared.positive, image=person, **settings):
        with pytest.raises(TryOnInputError) as caught:
            customise_idm_vton(model, positive, stock["vae"], image, **{**FAST_TRAINING, **settings})
        return str(caught.value)

    assert error(model=tryon).startswith("model:") and "IDM-VTON Apply" in error(model=tryon)  # a raw TryonNet
    assert error(model=garment_model).startswith("model:")  # GarmentNet wired in its place
    assert error(positive=stock["positive"]).startswith("positive:")  # CLIPTextEncode instead of Apply's positive
    assert error(image=pair_images(size=(160, 96))[0]).startswith("person_image:")  # a target of another size
    assert error(steps=0).startswith("steps:") and error(steps=1).startswith("steps:")
    assert error(learning_rate=0.0).startswith("learning_rate:")
    assert error(target="encoder").startswith("target:")
    for bad_name in ("../outside", "/absolute/path", "", "   ", "a//b", "sub/", ".safetensors", "x" * 201, "sub/" + "y" * 201):
        assert error(lora_name=bad_name).startswith("lora_name:"), bad_name
    cached = apply(tryon, garment_model, stock, images, garment_feature_cache="first_step")
    assert "garment_feature_cache" in error(model=cached.model, positive=cached.positive)
    assert list(lora_folder.iterdir()) == []


def test_an_unusable_lora_folder_is_refused_before_the_first_step(fast_models, stock, lora_folder):
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.pipeline.idm_vton_customise import customise_idm_vton

    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    (lora_folder / "taken").write_bytes(b"a user's file where the subfolder would go")
    steps_run = []
    with pytest.raises(TryOnInputError) as caught:
        settings = {**FAST_TRAINING, "lora_name": "taken/customised", "on_step": lambda step, loss: steps_run.append(step)}
        customise_idm_vton(prepared.model, prepared.positive, stock["vae"], images[0], **settings)
    assert str(caught.value).startswith("lora_name:") and "taken" in str(caught.value)
    assert steps_run == []  # refused before training, not after it
    assert (lora_folder / "taken").read_bytes().startswith(b"a user's file")


# --- the other settings ------------------------------------------------------------------------------------------------
def test_mask_loss_region_weights_the_eps_error_by_the_try_on_mask(fast_models, stock):
    from comfyui_tryon.pipeline.idm_vton_customise import eps_loss, prepare_pair

    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    with torch.inference_mode(False):
        pair = prepare_pair(prepared.model, prepared.positive, stock["vae"], images[0], "mask")
        whole = prepare_pair(prepared.model, prepared.positive, stock["vae"], images[0], "whole image")
    assert whole.weights is None
    weights = pair.weights[0, 0]
    height, width = weights.shape
    assert set(weights.unique().tolist()) == {0.0, 1.0}
    assert weights[height // 2, width // 2] == 1 and weights[0, 0] == 0 and weights[-1, -1] == 0  # the garment box of pair_images
    generator = torch.Generator().manual_seed(5)
    predicted, noise = torch.randn((2, 1, 4, height, width), generator=generator)
    noise[..., weights == 0] += 100.0  # a large error outside the mask must not count
    inside = ((predicted - noise) ** 2)[..., weights == 1].mean()
    assert torch.allclose(eps_loss(predicted, noise, pair.weights), inside)
    assert eps_loss(predicted, noise) > 100 * eps_loss(predicted, noise, pair.weights)


def test_mask_region_and_attention_target_train_and_load_with_the_stock_loader(fast_models, stock, lora_folder, caplog):
    import safetensors

    import nodes

    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    masked = customise(prepared, stock, images[0], steps=2, loss_region="mask", target="decoder attention layers", seed=5)
    whole = customise(prepared, stock, images[0], steps=2, target="decoder attention layers", seed=5)
    assert all(math.isfinite(v) for v in masked.loss_map["loss"])
    assert masked.loss_map["loss"][0] != whole.loss_map["loss"][0]  # same timestep and noise, another weighting
    with safetensors.safe_open(str(lora_folder / masked.lora_name), "pt") as file:
        keys, metadata = list(file.keys()), file.metadata()
    layers = {key.rsplit(".", 2)[0] if key.endswith(".weight") else key.rsplit(".", 1)[0] for key in keys}
    assert layers and all(".attn1." in layer or ".attn2." in layer for layer in layers)
    assert all(layer.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v") or layer.endswith("to_out.0") for layer in layers)
    assert (metadata["target"], metadata["loss_region"]) == ("decoder attention layers", "mask")
    with caplog.at_level(logging.WARNING):
        (loaded,) = nodes.LoraLoaderModelOnly().load_lora_model_only(tryon, masked.lora_name, 1.0)
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    assert len(loaded.patches) == len(layers)
