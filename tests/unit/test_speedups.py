"""The exact speed-ups equal the literal original; no repeated work per step; the opt-in garment feature cache."""

from __future__ import annotations

import dataclasses
import math
import types

import pytest
import torch
from test_parity import comfy_eps, reference_eps
from tiny_models import PRESETS, load_reference_unets
from tryon_setup import load_models, prepare_case


@pytest.fixture(scope="module")
def fast_models(pack, fast_repo):
    return load_models(fast_repo)


@pytest.fixture(scope="module")
def fast_reference(fast_repo):
    return load_reference_unets(fast_repo, PRESETS["fast"])


@pytest.fixture(scope="module")
def base_case(fast_models):
    """One prepared try-on (96x64); tests patch TryonNet again from its inputs with other options."""
    return prepare_case(*fast_models, height=96, width=64)


def variant(case, **options):
    """The same prepared inputs with other options: a new TryOnState and a freshly patched MODEL (a new, empty bank)."""
    from comfyui_tryon.attention.tryon_patch import patch_tryon_model, tryon_bank

    state = dataclasses.replace(case.result.state, **options)
    model = patch_tryon_model(case.tryon, state)
    result = dataclasses.replace(case.result, model=model, state=state, bank=tryon_bank(model))
    return dataclasses.replace(case, result=result)


def sample(case, steps=3, cfg=2.0, seed=1):
    import nodes

    return nodes.common_ksampler(case.result.model, seed, steps, cfg, "euler", "normal", case.result.positive, case.result.negative, case.result.latent)[0][
        "samples"
    ]


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference over the max magnitude (zsnr's sigma_max ~4096 gives latents of ~1e4 on random weights)."""
    return (a - b).abs().max().item() / b.abs().max().item()


# --- one biased zero key == M materialised zero tokens ----------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("count", [1, 7, 768, 3072])
def test_zero_key_biases_weigh_exactly_as_many_zero_keys(pack, dtype, count):
    from comfyui_tryon.attention.reference_attention import zero_key_biases

    biases = zero_key_biases(count, dtype)
    assert all(float(torch.tensor(b, dtype=dtype)) == b for b in biases)  # representable: the mask is in this dtype
    assert abs(sum(math.exp(b) for b in biases) - count) <= 2e-6 * count
    assert len(biases) == 1 if dtype == torch.float32 else len(biases) <= 4


class _Bank:
    """What the attn1 replace reads from a ReferenceFeatureBank: one block's features and the strength."""

    def __init__(self, features, strength):
        self.features, self.spec = features, types.SimpleNamespace(strength=strength)

    def features_for(self, key):
        return self.features


@pytest.mark.parametrize("uncond", ["zero_tokens", "materialised_features"])
@pytest.mark.parametrize("attention", ["attention_pytorch", "attention_sub_quad", "attention_split", "attention_basic"])
def test_attn1_replace_equals_literal_concat_and_slice_in_every_chunk_layout(fast_models, monkeypatch, attention, uncond):
    """Every attn1 replace equals attention over [n, r] (N+M tokens) sliced to N; r = g (cond), M zeros or u (uncond).

    Zero tokens go through the single biased key (IDM-VTON); materialised uncond features are OOTDiffusion's case.
    """
    import comfy.ldm.modules.attention as comfy_attention
    from comfyui_tryon.attention.garment_features import transformer_blocks
    from comfyui_tryon.attention.reference_attention import ReferenceAttentionReplace
    from comfyui_tryon.attention.reference_bank import ReferenceFeatures

    function = getattr(comfy_attention, attention)
    monkeypatch.setattr(comfy_attention, "optimized_attention", function)
    monkeypatch.setattr(comfy_attention, "optimized_attention_masked", function)
    generator = torch.Generator().manual_seed(11)
    blocks = transformer_blocks(fast_models[0].model.diffusion_model)
    torch.set_grad_enabled(False)
    for key, block in blocks.items():
        width = block.norm1.normalized_shape[0]
        x = torch.randn(4, 10, width, generator=generator) * 3
        garment = torch.randn(1, 13, width, generator=generator) * 3
        uncond_tokens = torch.randn(1, 13, width, generator=generator) * 3 if uncond == "materialised_features" else None
        replace = ReferenceAttentionReplace(_Bank(ReferenceFeatures(garment, uncond_tokens), 0.8), key, block.attn1)
        for order in ([0, 1], [1, 0], [0], [1]):
            n = x[: 2 * len(order)]
            extra = {"n_heads": block.n_heads, "cond_or_uncond": order, "attn_precision": None}
            ours = block.attn1.to_out(replace(block.attn1.to_q(n), block.attn1.to_k(n), block.attn1.to_v(n), extra))
            uncond_reference = torch.zeros_like(garment) if uncond_tokens is None else uncond_tokens * 0.8
            tokens = torch.cat([garment * 0.8 if kind == 0 else uncond_reference for kind in order]).repeat_interleave(2, 0)
            literal = block.attn1(torch.cat([n, tokens], dim=1))[:, : n.shape[1]]
            assert relative_gap(ours, literal) <= 1e-5, (key, order)
            if 1 in order:  # the zeros really take softmax mass: without them the uncond rows differ
                plain = block.attn1(n)
                rows = order.index(1)
                assert (plain[2 * rows : 2 * rows + 2] - literal[2 * rows : 2 * rows + 2]).abs().max().item() > 1e-3
    torch.set_grad_enabled(True)
    assert len(blocks) == 7


@pytest.mark.parametrize("uncond_keys", ["single_key", "materialised"])
@pytest.mark.parametrize("order", [(0, 1), (1, 0), (0,), (1,)], ids=["cond-first", "uncond-first", "cond-only", "uncond-only"])
def test_tryon_eps_matches_the_literal_reference_in_every_chunk_layout(base_case, fast_reference, fast_repo, uncond_keys, order):
    case = variant(base_case, uncond_keys=uncond_keys)
    patches = case.result.model.model_options["transformer_options"]
    assert ("attn1" in patches.get("patches_replace", {})) == (uncond_keys == "single_key")
    ms = case.result.model.model.model_sampling
    sigma = ms.sigmas[600].reshape(1)
    x = torch.randn(1, 4, case.height // 8, case.width // 8, generator=torch.Generator().manual_seed(7)) * sigma
    with torch.no_grad():
        ours = dict(zip(order, comfy_eps(case, x, sigma, order), strict=True))
        eps_uncond, eps_cond = reference_eps(case, (case, *fast_reference, fast_repo), x / math.sqrt(sigma.item() ** 2 + 1), ms.timestep(sigma).item())
    expected = {0: eps_cond, 1: eps_uncond}
    for kind in order:
        assert (ours[kind] - expected[kind]).abs().max().item() <= 1e-4, kind
    assert (eps_cond - eps_uncond).abs().max().item() > 1e-3


# --- no repeated work ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["batched", "split"])
def test_single_key_sampling_equals_materialised_zeros_with_one_garment_pass_per_step(base_case, monkeypatch, layout):
    results = {}
    for uncond_keys in ("single_key", "materialised"):
        case = variant(base_case, uncond_keys=uncond_keys)
        if layout == "split":  # ComfyUI runs cond and uncond as separate calls when memory looks short
            monkeypatch.setattr(case.result.model.model, "memory_required", lambda *a, **k: float("inf"))
        calls = []
        stock = case.result.model.model.diffusion_model.forward
        monkeypatch.setattr(
            case.result.model.model.diffusion_model, "forward", lambda x, *a, calls=calls, stock=stock, **k: calls.append(x.shape[0]) or stock(x, *a, **k)
        )
        results[uncond_keys] = sample(case, steps=3)
        monkeypatch.undo()
        assert case.result.bank.reference_passes == 3
        assert calls == ([1, 1] * 3 if layout == "split" else [2] * 3)
        assert case.result.bank.features == {}
    assert relative_gap(results["single_key"], results["materialised"]) <= 1e-5


def test_garment_net_stops_after_its_last_captured_block_and_equals_a_full_run(base_case):
    from comfyui_tryon.attention.garment_features import garment_features

    case = base_case
    state = case.result.state
    unet = case.garment.model.diffusion_model
    ran: list[str] = []
    hooks = [
        layer.register_forward_hook(lambda *a, number=number: ran.append(f"output{number}"))
        for number, block in enumerate(unet.output_blocks)
        for layer in block
    ]
    hooks.append(unet.out.register_forward_hook(lambda *a: ran.append("out")))
    t, context = torch.tensor([500.0]), state.garment_context
    try:
        with torch.no_grad():
            early = garment_features(unet, state.garment_latent, t, context, state.wanted)
            ran_early, ran[:] = set(ran), []
            full: dict = {}

            def capture(n, context_attn1, value_attn1, extra):
                full[(extra["block"][0], extra["block"][1], extra["block_index"])] = n
                return n, context_attn1, value_attn1

            unet(state.garment_latent, t, context=context, transformer_options={"patches": {"attn1_patch": [capture]}})
            ran_full = set(ran)
    finally:
        for hook in hooks:
            hook.remove()
    last = max(number for name, number, _ in state.wanted if name == "output")
    skipped = {f"output{number}" for number in range(last + 1, len(unet.output_blocks))} | {"out"}
    assert len(skipped) == 3  # fast preset: output blocks 4, 5 and conv_out never run
    assert ran_full >= skipped and not (ran_early & skipped)
    assert ran_early == {f"output{number}" for number in range(last + 1)}
    assert list(early) == list(full) == list(state.wanted)
    assert max((early[k] - full[k]).abs().max().item() for k in full) <= 1e-6


def test_vae_encodes_and_ip_tokens_happen_once_per_apply_never_per_step(fast_models, monkeypatch):
    import comfy.clip_model
    import comfy.sd

    counts = {"vae": 0, "clip_vision": 0, "resampler": 0}

    def counting(cls, name, what):
        stock = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            counts[what] += 1
            return stock(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    counting(comfy.sd.VAE, "encode", "vae")
    counting(comfy.clip_model.CLIPVisionModelProjection, "forward", "clip_vision")
    hook = fast_models[0].model.ip_resampler.register_forward_hook(lambda *a: counts.__setitem__("resampler", counts["resampler"] + 1))
    try:
        case = prepare_case(*fast_models, persons=2)
        after_apply = dict(counts)
        sample(case, steps=3)
    finally:
        hook.remove()
    assert after_apply == {"vae": 3, "clip_vision": 2, "resampler": 2}  # masked person, DensePose, garment; garment + zero image
    assert counts == after_apply  # sampling 3 steps at CFG 2 encodes nothing again
    assert case.result.bank.reference_passes == 3


# --- the approximate garment feature cache ------------------------------------------------------
@pytest.mark.parametrize("mode,index", [("first_step", 0), ("mid_schedule", 2)])
def test_feature_cache_runs_garment_net_once_per_run_at_the_chosen_timestep(base_case, monkeypatch, mode, index):
    import comfy.samplers
    from comfyui_tryon.attention import reference_bank

    exact = sample(variant(base_case), steps=4)
    case = variant(base_case, feature_cache=mode)
    timesteps = []
    stock = reference_bank.garment_features
    monkeypatch.setattr(reference_bank, "garment_features", lambda unet, latent, t, *a: timesteps.append(float(t[0])) or stock(unet, latent, t, *a))
    monkeypatch.setattr(case.result.model.model, "memory_required", lambda *a, **k: float("inf"))  # split cond/uncond calls
    cached = sample(case, steps=4)
    ms = case.result.model.model.model_sampling
    sigmas = comfy.samplers.calculate_sigmas(ms, "normal", 4)
    assert timesteps == [pytest.approx(float(ms.timestep(sigmas[index])), abs=1e-3)]
    assert case.result.bank.reference_passes == 1 and case.result.bank.features == {}
    assert torch.isfinite(cached).all() and relative_gap(cached, exact) > 1e-6  # approximate: not the exact result
    again = sample(case, steps=4)  # the next run computes its own features (nothing leaks between runs)
    assert case.result.bank.reference_passes == 2 and torch.equal(again, cached)


def test_feature_cache_is_an_optional_node_input_off_by_default(base_case):
    from comfyui_tryon.attention.reference_spec import EveryStep
    from comfyui_tryon.nodes.apply import IDMVTONApply

    spec = IDMVTONApply.INPUT_TYPES()["optional"]["garment_feature_cache"]
    options = spec[1].get("options", spec[0])  # V3 combos list their options in the dict
    assert list(options) == ["off", "first_step", "mid_schedule"] and spec[1]["default"] == "off"
    assert base_case.result.state.feature_cache == "off"  # apply_idm_vton's default
    assert base_case.result.bank.spec.timing == EveryStep()


@pytest.mark.parametrize("option,value", [("feature_cache", "sometimes"), ("uncond_keys", "some")])
def test_unknown_options_are_a_clear_error_raised_once_by_the_state(base_case, option, value):
    from comfyui_tryon.errors import TryOnInputError

    name = {"feature_cache": "garment_feature_cache"}.get(option, option)
    with pytest.raises(TryOnInputError, match=f"{name}: must be one of"):
        dataclasses.replace(base_case.result.state, **{option: value})


def test_state_is_immutable_and_sampling_leaves_it_untouched(base_case):
    state = base_case.result.state
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.uncond_keys = "materialised"
    before = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    tensors = {name: value.clone() for name, value in before.items() if isinstance(value, torch.Tensor)}
    sample(base_case, steps=1)
    assert all(getattr(state, name) is value for name, value in before.items())
    assert all(torch.equal(getattr(state, name), value) for name, value in tensors.items())


# --- living with other nodes' attn1 replaces ------------------------------------------------------
class IdentityReplace:
    """Another pack's attn1 replace: plain attention over whatever keys/values it is given."""

    def __call__(self, q, k, v, extra_options):
        import comfy.ldm.modules.attention as comfy_attention

        return comfy_attention.optimized_attention(q, k, v, extra_options["n_heads"])


def test_an_earlier_attn1_replace_is_kept_and_the_garment_rides_on_the_attn1_patch(base_case):
    from comfyui_tryon.attention.reference_attention import ReferenceAttentionPatch
    from comfyui_tryon.attention.reference_bank import Attn1Hook

    key = base_case.result.state.wanted[0]
    other = base_case.tryon.clone()
    other.set_model_attn1_replace(IdentityReplace(), *key)
    combined = variant(dataclasses.replace(base_case, tryon=other))
    options = combined.result.model.model_options["transformer_options"]
    assert combined.result.bank.attn1_hook == Attn1Hook.PATCH and combined.result.state.uncond_keys == "single_key"  # data untouched
    assert isinstance(options["patches_replace"]["attn1"][key], IdentityReplace)  # theirs stays
    assert isinstance(options["patches"]["attn1_patch"][0], ReferenceAttentionPatch)  # ours extends its keys/values
    # a plain-attention replace over the extended keys/values changes nothing: same latent as ours alone
    alone = sample(variant(base_case, uncond_keys="materialised"), steps=2)
    assert relative_gap(sample(combined, steps=2), alone) <= 1e-5


def test_a_later_attn1_replace_that_displaces_ours_is_reported_once(base_case, caplog):
    case = variant(base_case)
    key = case.result.state.wanted[-1]
    case.result.model.set_model_attn1_replace(IdentityReplace(), *key)
    with caplog.at_level("WARNING"):
        sample(case, steps=2)
    warnings = [r.getMessage() for r in caplog.records if "IDM-VTON" in r.getMessage() and "replaced the self-attention" in r.getMessage()]
    assert len(warnings) == 1 and "1 of its" in warnings[0] and "before 'IDM-VTON Apply'" in warnings[0]


def test_no_displacement_warning_when_nothing_else_touches_attn1(base_case, caplog):
    with caplog.at_level("WARNING"):
        sample(variant(base_case), steps=1)
    assert not [r for r in caplog.records if "replaced the self-attention" in r.getMessage()]
