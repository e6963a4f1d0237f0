"""How the try-on MODEL behaves inside ComfyUI: once-per-step GarmentNet, CFG layouts, batches, clones, errors."""

from __future__ import annotations

import pickle

import comfy_host
import pytest
import torch
from tryon_setup import load_models, prepare_case


@pytest.fixture(scope="module")
def fast_models(pack, fast_repo):
    return load_models(fast_repo)


def sample(case, steps=3, cfg=2.0, sampler="euler", scheduler="normal", seed=1):
    import nodes

    return nodes.common_ksampler(case.result.model, seed, steps, cfg, sampler, scheduler, case.result.positive, case.result.negative, case.result.latent)[0][
        "samples"
    ]


def test_garment_net_runs_once_per_step_and_the_bank_is_freed(fast_models):
    case = prepare_case(*fast_models)
    out = sample(case, steps=3)
    assert case.result.bank.reference_passes == 3
    assert case.result.bank.features == {}
    assert torch.isfinite(out).all()


def test_split_cond_and_uncond_batches_give_the_same_result_with_one_pass_per_step(fast_models, monkeypatch):
    together = sample(prepare_case(*fast_models))
    case = prepare_case(*fast_models)
    # ComfyUI splits cond/uncond into separate calls when memory is short; make every estimate too big
    monkeypatch.setattr(case.result.model.model, "memory_required", lambda *a, **k: float("inf"))
    split = sample(case)
    assert case.result.bank.reference_passes == 3
    # random tiny weights at zsnr's sigma_max (~4096) give latents of ~1e4: compare relatively
    assert (together - split).abs().max().item() <= 1e-5 * together.abs().max().item()


def test_cfg_one_runs_without_an_uncond_chunk(fast_models):
    case = prepare_case(*fast_models)
    out = sample(case, cfg=1.0, steps=2)
    assert torch.isfinite(out).all() and case.result.bank.reference_passes == 2


def test_uncond_chunk_sees_zero_garment_tokens_not_copies(pack):
    from comfyui_tryon.attention.reference_attention import reference_context

    n, g = torch.randn(4, 5, 8), torch.randn(1, 3, 8)
    context = reference_context(n, g, [1, 0])
    assert context.shape == (4, 8, 8)
    assert torch.equal(context[:2, 5:], torch.zeros(2, 3, 8))  # uncond chunk: zeros kept
    assert torch.equal(context[2:, 5:], g.expand(2, 3, 8))  # cond chunk: the garment
    assert torch.equal(context[:, :5], n)


def test_ip_attention_equals_text_plus_ip_attention(pack):
    import comfy.ops
    from comfyui_tryon.attention.ip_attention import IPAdapterTokens, IPAttentionReplace
    from comfyui_tryon.models.tryon_net import IPKeyValue

    layer = IPKeyValue(16, 64, comfy.ops.disable_weight_init)
    torch.nn.init.normal_(layer.to_k_ip.weight)
    torch.nn.init.normal_(layer.to_v_ip.weight)
    ip_cond, ip_uncond = torch.randn(1, 4, 16), torch.randn(1, 4, 16)
    q, k, v = torch.randn(2, 6, 64), torch.randn(2, 7, 64), torch.randn(2, 7, 64)
    out = IPAttentionReplace(None, IPAdapterTokens(ip_cond, ip_uncond), layer, 0.7)(q, k, v, {"n_heads": 1, "cond_or_uncond": [0, 1]})
    attend = lambda q, k, v: torch.softmax(q @ k.transpose(1, 2) / 8.0, -1) @ v  # noqa: E731
    tokens = torch.cat([ip_cond, ip_uncond])
    expected = attend(q, k, v) + 0.7 * attend(q, layer.to_k_ip(tokens), layer.to_v_ip(tokens))
    assert (out - expected).abs().max().item() <= 1e-5


def original_ddpm_latent(case, seed: int, steps: int, cfg: float) -> torch.Tensor:
    """IDM-VTON's sampling written out: DDPM over the leading timesteps t_i = i * (1000 // steps) + 1, CFG on eps.

    DDPM step (fixed-small variance): x0 = (x - sqrt(1 - a) eps) / sqrt(a); mean = sqrt(a_prev) b / (1 - a) x0 +
    sqrt(a / a_prev) (1 - a_prev) / (1 - a) x; x_prev = mean + sqrt((1 - a_prev) / (1 - a) b) z, with
    b = 1 - a / a_prev and a_prev = 1 after the last step. a = 1 / (1 + sigma^2) from the model's (zsnr) sigma table;
    eps from the patched MODEL (test_parity.comfy_eps, no ComfyUI sampler code). Seeding follows ComfyUI's: the initial
    noise and, from a second generator with the same seed, one draw z per step; the start is sigma_0 * noise.
    """
    from test_parity import comfy_eps

    ms = case.result.model.model.model_sampling
    shape = case.result.latent["samples"].shape
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    draws = torch.Generator().manual_seed(seed)
    timesteps = [i * (1000 // steps) + 1 for i in range(steps)][::-1]
    alphas = [1 / (1 + ms.sigmas[t].double() ** 2) for t in timesteps] + [torch.tensor(1.0, dtype=torch.float64)]
    x = noise.double() * ms.sigmas[timesteps[0]].double() / (1 + ms.sigmas[timesteps[0]].double() ** 2).sqrt()  # VP latent
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            a, a_prev = alphas[i], alphas[i + 1]
            sigma = ms.sigmas[t].reshape(1)
            eps_cond, eps_uncond = comfy_eps(case, (x * (1 + sigma.double() ** 2).sqrt()).float(), sigma, (0, 1))
            eps = (eps_uncond + cfg * (eps_cond - eps_uncond)).double()
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            b = 1 - a / a_prev
            x = a_prev.sqrt() * b / (1 - a) * x0 + (a / a_prev).sqrt() * (1 - a_prev) / (1 - a) * x
            if i + 1 < steps:
                x = x + ((1 - a_prev) / (1 - a) * b).sqrt() * torch.randn(shape, generator=draws).double()
    return case.result.model.model.process_latent_out(x.float())


def sampler_node_latent(case, **settings) -> torch.Tensor:
    from comfyui_tryon.nodes.sampler import IDMVTONSampler

    output = IDMVTONSampler.execute(case.result.model, case.result.positive, case.result.negative, case.result.latent, **settings)
    return output[0]["samples"]


def test_the_sampler_node_is_ddpm_over_the_original_leading_timesteps(fast_models):
    case = prepare_case(*fast_models)
    ours = sampler_node_latent(case, seed=5, steps=4, cfg=2.0, sampler_name="ddpm", scheduler="ddim_uniform")
    expected = original_ddpm_latent(case, seed=5, steps=4, cfg=2.0)
    assert (ours - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    other_seed = original_ddpm_latent(case, seed=6, steps=4, cfg=2.0)
    assert (other_seed - expected).abs().max().item() > 1e-2 * expected.abs().max().item()  # the comparison can tell


def test_the_leading_scheduler_follows_the_original_thirty_timesteps(fast_models):
    case = prepare_case(*fast_models)
    ours = sampler_node_latent(case, seed=42, steps=30, cfg=2.0, sampler_name="ddpm", scheduler="leading (original)")
    expected = original_ddpm_latent(case, seed=42, steps=30, cfg=2.0)
    assert (ours - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    stock = sampler_node_latent(case, seed=42, steps=30, cfg=2.0, sampler_name="ddpm", scheduler="ddim_uniform")
    assert (stock - expected).abs().max().item() > 1e-3 * expected.abs().max().item()  # ddim_uniform runs 31 steps here


def test_leading_sigmas_are_the_original_timesteps(pack, fast_models):
    from comfyui_tryon.pipeline.idm_vton_sampling import leading_sigmas

    case = prepare_case(*fast_models)
    model_sampling = case.result.model.get_model_object("model_sampling")
    sigmas = leading_sigmas(model_sampling, 30)
    timesteps = [int(model_sampling.timestep(s).round()) for s in sigmas[:-1]]
    assert timesteps == list(range(958, 0, -33)) and float(sigmas[-1]) == 0.0


@pytest.mark.parametrize("persons,garments", [(2, 1), (2, 2), (1, 2)])
def test_batches_of_persons_and_garments(fast_models, persons, garments):
    case = prepare_case(*fast_models, persons=persons, garments=garments)
    out = sample(case, steps=1)
    assert out.shape[0] == max(persons, garments)
    assert case.result.bank.reference_passes == 1


def test_batch_mismatch_is_a_clear_error(fast_models):
    error = comfy_host.import_pack().errors.TryOnInputError
    with pytest.raises(error, match="batch sizes do not match.*person_image=2.*garment_image=3"):
        prepare_case(*fast_models, persons=2, garments=3)


def test_clone_shares_weights_and_bank(fast_models):
    from comfyui_tryon.attention.tryon_patch import tryon_bank

    case = prepare_case(*fast_models)
    clone = case.result.model.clone()
    assert clone.model is case.result.model.model
    replaces = clone.model_options["transformer_options"]["patches_replace"]
    assert all(patch.bank is case.result.bank for patch in replaces["attn1"].values())
    assert all(patch.owner is case.result.bank for patch in replaces["attn2"].values())
    assert tryon_bank(clone) is case.result.bank and case.result.bank.inputs.latent is case.result.state.garment_latent
    assert case.garment in clone.model_patches_models()  # GarmentNet loads together with TryonNet


def test_garment_loader_and_sdxl_checkpoint_are_the_same_garment_net(pack, fast_repo):
    from comfyui_tryon.attention.garment_features import garment_features

    tryon, from_loader = load_models(fast_repo, "loader")
    _, from_checkpoint = load_models(fast_repo, "checkpoint")
    case = prepare_case(tryon, from_loader)
    state = case.result.state
    t = torch.tensor([500.0])
    a = garment_features(from_loader.model.diffusion_model, state.garment_latent, t, state.garment_context, state.wanted)
    b = garment_features(from_checkpoint.model.diffusion_model, state.garment_latent, t, state.garment_context, state.wanted)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in state.wanted)


def test_tryon_model_carries_ip_weights_and_zero_terminal_snr_sampling(fast_models):
    tryon, _ = fast_models
    assert len(tryon.model.ip_adapter) == 7 and tryon.model.ip_resampler is not None
    assert ("middle", 0, 0) in {tuple(k.split("_")[:1]) + (int(k.split("_")[1]), int(k.split("_")[2])) for k in tryon.model.ip_adapter}
    assert tryon.model.model_sampling.sigma_max > 100  # zsnr: stock SDXL's is 14.6


@pytest.mark.parametrize("dtype,torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp8_e4m3fn", torch.float8_e4m3fn)])
def test_weight_dtype_option_goes_through_comfy(pack, fast_repo, dtype, torch_dtype):
    from comfyui_tryon.models.tryon_net import build_tryon_model
    from comfyui_tryon.models.weights_io import read_state_dict

    model = build_tryon_model(read_state_dict(str(fast_repo / "unet" / "diffusion_pytorch_model.bin"), "t"), dtype)
    assert model.model.diffusion_model.input_blocks[0][0].weight.dtype == torch_dtype
    assert next(model.model.ip_adapter.parameters()).dtype == torch_dtype


def test_single_file_safetensors_fp16_loads_like_the_hf_folder(pack, fast_repo, tmp_path):
    import safetensors.torch
    from comfyui_tryon.models.tryon_net import build_tryon_model
    from comfyui_tryon.models.weights_io import read_state_dict

    state = torch.load(fast_repo / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
    single = tmp_path / "idm_vton_tryon_fp16.safetensors"
    safetensors.torch.save_file({k: v.half().contiguous() for k, v in state.items()}, single)
    a = build_tryon_model(read_state_dict(str(single), "t"), "fp16").model.state_dict()
    b = build_tryon_model(read_state_dict(str(fast_repo / "unet" / "diffusion_pytorch_model.bin"), "t"), "fp16").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused_and_runs_nothing(pack, tmp_path):
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.models.weights_io import read_state_dict

    marker = tmp_path / "pwned"
    evil = tmp_path / "diffusion_pytorch_model.bin"
    torch.save({"conv_in.weight": _Exploit(str(marker))}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    assert not marker.exists()
    with pytest.raises(TryOnInputError, match="tryon_net_name"):
        read_state_dict(str(evil), "tryon_net_name")
    assert not marker.exists()


def test_swapped_or_wrong_models_give_clear_errors(pack, fast_repo, fast_models):
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.models.garment_net import build_garment_model
    from comfyui_tryon.models.tryon_net import build_tryon_model
    from comfyui_tryon.models.weights_io import read_state_dict

    tryon, garment = fast_models
    with pytest.raises(TryOnInputError, match="tryon_net_name: this is not an IDM-VTON TryonNet"):
        build_tryon_model(read_state_dict(str(fast_repo / "unet_encoder" / "diffusion_pytorch_model.safetensors"), "g"))
    with pytest.raises(TryOnInputError, match="garment_net_name: .*13 input channels"):
        build_garment_model(read_state_dict(str(fast_repo / "unet" / "diffusion_pytorch_model.bin"), "t"))
    with pytest.raises(TryOnInputError, match="garment_model: this is a 13-channel TryonNet"):
        prepare_case(tryon, tryon)
    with pytest.raises(TryOnInputError, match="tryon_model: this MODEL is not an IDM-VTON TryonNet"):
        prepare_case(garment, garment)


def test_tryon_model_without_the_apply_node_says_what_to_wire(fast_models):
    import nodes

    tryon, _ = fast_models
    _, clip = nodes.CheckpointLoaderSimple().load_checkpoint("tiny_sdxl_fast.safetensors")[:2]
    (cond,) = nodes.CLIPTextEncode().encode(clip, "x")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    with pytest.raises(Exception, match="IDM-VTON Apply"):
        nodes.common_ksampler(tryon, 0, 1, 2.0, "euler", "normal", cond, cond, latent)


def test_interrupt_mid_sampling_then_the_next_run_is_correct(fast_models):
    import comfy.model_management

    import nodes

    reference = sample(prepare_case(*fast_models), steps=3)
    case = prepare_case(*fast_models)
    calls = []

    def interrupt_at_step_two(step, *args):
        calls.append(step)
        if step == 1:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        nodes.comfy.sample.sample(
            case.result.model,
            torch.randn(1, 4, 16, 12),
            3,
            2.0,
            "euler",
            "normal",
            case.result.positive,
            case.result.negative,
            case.result.latent["samples"],
            callback=interrupt_at_step_two,
        )
    comfy.model_management.interrupt_current_processing(False)
    assert case.result.bank.live_state() == {"feature_tensors": 0, "step_depth": 0, "run_timestep_set": False}
    assert torch.equal(sample(prepare_case(*fast_models), steps=3), reference)
