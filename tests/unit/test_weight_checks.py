"""The checks every loader, resize and setting goes through (issue 17): weights, resize bounds, float settings.

The same cases run end to end through a real server in tests/server/test_reliability_models.py and
tests/server/test_reliability_limits.py; here the functions themselves, including what no server case reaches.
"""

from __future__ import annotations

import fixtures_openpose
import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def checks(pack):
    from comfyui_tryon.models import weight_checks

    return weight_checks


@pytest.fixture(scope="module")
def input_error(pack):
    from comfyui_tryon.errors import TryOnInputError

    return TryOnInputError


@pytest.fixture(scope="module")
def tryon_weights(pack, fast_repo):
    from comfyui_tryon.models.weights_io import read_state_dict

    return read_state_dict(str(fast_repo / "unet" / "diffusion_pytorch_model.bin"), "tryon_net_name")


def source(checks, **extra):
    return checks.WeightsFile("some_input", "weights.safetensors", "Download it again.", **extra)


EXPECTED = {"a.weight": (4, 3), "a.bias": (4,), "b.weight": (2, 4), "b.bias": (2,), "c.weight": (2, 2), "d.weight": (1,)}


def good() -> dict[str, torch.Tensor]:
    return {k: torch.randn(s) for k, s in EXPECTED.items()}


# ----------------------------------------------------------------------------------------------
# check_state_dict
# ----------------------------------------------------------------------------------------------
def test_a_complete_finite_float_state_dict_passes(checks):
    checks.check_state_dict(good(), EXPECTED, source(checks))


def test_missing_keys_are_named_a_few_at_a_time_with_the_input_the_file_and_the_fix(checks, input_error):
    weights = {k: v for k, v in good().items() if k == "a.weight"}
    with pytest.raises(input_error) as error:
        checks.check_state_dict(weights, EXPECTED, source(checks))
    assert str(error.value) == (
        "some_input: weights.safetensors is incomplete, damaged or of another network: 5 tensor(s) missing "
        "(a.bias, b.weight, b.bias, ... (2 more)). Download it again."
    )


def test_unexpected_keys_are_named_in_the_files_own_naming(checks, input_error):
    weights = {**good(), "extra.weight": torch.zeros(1)}
    with pytest.raises(input_error, match=r"1 unexpected tensor\(s\) \(file\.extra\)"):
        checks.check_state_dict(weights, EXPECTED, source(checks, file_keys={"extra.weight": "file.extra"}))
    weights = {k: v for k, v in good().items() if k != "b.bias"}
    with pytest.raises(input_error, match=r"1 tensor\(s\) missing \(prefixed\.bias\)"):
        checks.check_state_dict(weights, EXPECTED, source(checks, file_prefixes={"b.": "prefixed."}))


def test_ignored_keys_may_be_present_or_absent(checks):
    weights = {k: v for k, v in good().items() if k != "d.weight"}
    weights["position_ids"] = torch.arange(3)  # not floating, but never loaded: not checked
    checks.check_state_dict(weights, EXPECTED, source(checks), ignored=lambda key: key in ("d.weight", "position_ids"))


def test_a_wrong_shape_names_the_tensor_and_both_shapes(checks, input_error):
    weights = {**good(), "b.weight": torch.zeros(2, 5)}
    with pytest.raises(input_error, match=r"has tensors of the wrong shape \(b\.weight is \(2, 5\) where the network needs \(2, 4\)\)"):
        checks.check_state_dict(weights, EXPECTED, source(checks))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
def test_integer_or_bool_tensors_are_not_weights(checks, input_error, dtype):
    weights = {**good(), "c.weight": torch.ones(2, 2, dtype=dtype)}
    with pytest.raises(input_error, match=rf"holds {str(dtype).removeprefix('torch.')} values in 1 tensor\(s\) \(c\.weight\), not floating-point weights"):
        checks.check_state_dict(weights, EXPECTED, source(checks))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_one_non_finite_value_anywhere_is_found_in_every_float_dtype(checks, input_error, dtype, value):
    if dtype == torch.float8_e4m3fn and value == value:
        pytest.skip("float8_e4m3fn has no infinity (an overflow is NaN)")
    tensor = torch.randn(3, 1000).to(dtype)
    assert checks.is_finite(tensor)
    tensor.view(-1)[1234] = value
    assert not checks.is_finite(tensor)
    weights = {**good(), "a.weight": torch.randn(4, 3).to(dtype), "c.weight": tensor[:2, :2].clone()}
    weights["c.weight"].view(-1)[3] = value
    with pytest.raises(input_error, match=r"holds NaN or infinite values in 1 tensor\(s\) \(c\.weight\): the file is damaged"):
        checks.check_state_dict(weights, EXPECTED, source(checks))


def test_a_large_float8_tensor_is_checked_in_chunks(checks):
    tensor = torch.zeros(checks.CHUNK * 2 + 5, dtype=torch.float8_e4m3fn)
    assert checks.is_finite(tensor)
    tensor[-1] = float("nan")
    assert not checks.is_finite(tensor)


# ----------------------------------------------------------------------------------------------
# The UNet loaders: the expected set is the model the file's config describes, built on the meta device
# ----------------------------------------------------------------------------------------------
def test_the_tryonnet_fixture_matches_the_meta_model_exactly(pack, checks, tryon_weights):
    from comfyui_tryon.models.tryon_net import TryonNetConfig, split_tryon_state_dict

    unet_config, comfy_unet, ip_layout, resampler, extra, _ = split_tryon_state_dict(dict(tryon_weights), "tryon_net_name")
    weights = {**comfy_unet, **extra}
    expected = checks.comfy_model_shapes(TryonNetConfig(unet_config, ip_layout, resampler), weights, source(checks))
    assert set(expected) == set(weights)
    assert all(tuple(expected[k]) == tuple(v.shape) for k, v in weights.items())
    assert len(ip_layout) == sum(k.endswith("to_k_ip.weight") for k in tryon_weights)  # every cross-attention has IP


def test_every_weight_of_a_loaded_tryonnet_comes_from_the_file(pack, tryon_weights):
    """No parameter is left as the uninitialised memory ComfyUI builds its layers with."""
    from comfyui_tryon.models.tryon_net import build_tryon_model, split_tryon_state_dict

    _, comfy_unet, _, _, extra, _ = split_tryon_state_dict(dict(tryon_weights), "tryon_net_name")
    model = build_tryon_model(dict(tryon_weights), "default").model
    loaded = {k.removeprefix("diffusion_model."): v for k, v in model.state_dict().items()}
    for key, tensor in {**comfy_unet, **extra}.items():
        assert torch.equal(loaded[key].float(), tensor.float()), key
    parameters = {k.removeprefix("diffusion_model.") for k, _ in model.named_parameters()}
    assert parameters == set(comfy_unet) | set(extra)


@pytest.mark.parametrize("loader", ["tryon", "garment"])
def test_a_missing_unet_tensor_is_named_in_the_files_diffusers_naming(pack, fast_repo, input_error, loader):
    from comfyui_tryon.models.garment_net import build_garment_model
    from comfyui_tryon.models.tryon_net import build_tryon_model
    from comfyui_tryon.models.weights_io import read_state_dict

    folder, build = {
        "tryon": ("unet/diffusion_pytorch_model.bin", build_tryon_model),
        "garment": ("unet_encoder/diffusion_pytorch_model.safetensors", build_garment_model),
    }[loader]
    weights = read_state_dict(str(fast_repo / folder), "x")
    dropped = next(k for k in weights if k.endswith("resnets.0.norm2.weight"))
    del weights[dropped]
    with pytest.raises(input_error, match=rf"^{loader}_net_name: my_file is incomplete, damaged or of another network: 1 tensor\(s\) missing \({dropped}\)"):
        build(weights, "default", f"{loader}_net_name", "my_file")


def test_an_ootd_style_call_without_a_source_still_refuses_a_missing_tensor(pack, fast_repo, input_error):
    """build_model_patcher checks every UNet it builds, whoever calls it (a caller that passes no source gets
    messages without the input and file names)."""
    from comfyui_tryon.models.garment_net import GarmentNetConfig
    from comfyui_tryon.models.sdxl_unet import build_model_patcher, convert_unet_keys, unet_config_from_diffusers, without_adm
    from comfyui_tryon.models.weights_io import read_state_dict

    weights = read_state_dict(str(fast_repo / "unet_encoder" / "diffusion_pytorch_model.safetensors"), "x")
    config = without_adm(unet_config_from_diffusers(weights, "x"))
    comfy_unet, _ = convert_unet_keys(weights, config, "x", ignored_prefixes=("add_embedding.",))
    comfy_unet.pop("out.2.weight")
    with pytest.raises(input_error, match=r"^weights: this UNet file is incomplete.*\(out\.2\.weight\)"):
        build_model_patcher(GarmentNetConfig(config), comfy_unet)


# ----------------------------------------------------------------------------------------------
# Resize bounds, "too small", degenerate masks
# ----------------------------------------------------------------------------------------------
def test_a_resize_is_bounded_per_side_and_in_total(pack, input_error):
    from comfyui_tryon.preprocess.images import MAX_PIXELS, MAX_SIDE, check_resize

    assert check_resize("image", (10, 20), (MAX_SIDE, MAX_SIDE), "scaled", "Fix.") == (MAX_SIDE, MAX_SIDE)
    assert MAX_PIXELS == MAX_SIDE * MAX_SIDE
    for target in ((MAX_SIDE + 1, 2), (2, MAX_SIDE + 1)):
        with pytest.raises(input_error, match=rf"^image: 10x20 scaled would become {target[0]}x{target[1]}, over the 4096px limit a side .* Fix\.$"):
            check_resize("image", (10, 20), target, "scaled", "Fix.")
    with pytest.raises(input_error, match="under 2px a side"):
        check_resize("image", (10, 20), (1, 100), "scaled", "Fix.")


@pytest.mark.parametrize("shape", [(1, 64, 1, 3), (1, 1, 64, 3), (1, 0, 64, 3), (2, 64, 0, 1), (64, 1, 4)])
def test_an_image_under_2px_a_side_is_too_small_not_a_channel_problem(pack, input_error, shape):
    from comfyui_tryon.preprocess.images import as_rgb

    with pytest.raises(input_error, match=r"^image: the image is \d+x\d+ pixels, too small \(at least 2px a side\)"):
        as_rgb(torch.rand(shape), "image")


@pytest.mark.parametrize("shape", [(1, 0, 64), (1, 64, 0), (0, 64, 64), (0, 64)])
def test_a_mask_with_a_side_of_zero_size_gets_the_one_message(pack, input_error, shape):
    from comfyui_tryon.preprocess.images import as_mask

    with pytest.raises(input_error, match=r"^user_mask: the mask is \d+x\d+ pixels \(batch \d+\), a side of zero size"):
        as_mask(torch.ones(shape), "user_mask")
    assert as_mask(torch.ones(1, 1, 64), "user_mask").shape == (1, 1, 64)  # one pixel high is a mask


def test_openpose_refuses_an_image_whose_184px_scaling_would_be_huge(pack, tmp_path, input_error):
    from comfyui_tryon.models.openpose_body import load_body_pose_model, run_body_network

    path = tmp_path / "body_pose_model.pth"
    torch.save(fixtures_openpose.fixture_state_dict(), path)
    patcher = load_body_pose_model(str(path), "pose_model")
    with pytest.raises(input_error, match=r"^image: 4096x24 scaled to 184px high for OpenPose would become 31403x184, over the 4096px limit"):
        run_body_network(patcher, np.zeros((24, 4096, 3), np.uint8))
    heat, paf = run_body_network(patcher, np.zeros((184, 500, 3), np.uint8))  # 500 wide at 184 high: fine
    assert heat.shape[:2] == (184, 500)


def test_the_caption_processor_resize_is_the_shorter_side_or_a_fixed_size(pack):
    from comfyui_tryon.models.caption_model import processor_resize
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    assert processor_resize(CLIPImageProcessor(size={"shortest_edge": 224}), 600, 2) == (67200, 224)
    assert processor_resize(SiglipImageProcessor(size={"height": 384, "width": 384}), 600, 2) == (384, 384)
    assert processor_resize(CLIPImageProcessor(do_resize=False), 600, 2) is None


# ----------------------------------------------------------------------------------------------
# FLOAT settings
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), "cfg: nan is not a finite number (NaN or infinity), which would give a black or broken image. Set a number from 0.0 to 100.0."),
        (float("inf"), "cfg: inf is not a finite number"),
        (-1.0, "cfg: -1.0 is outside its range. Set a number from 0.0 to 100.0."),
        ("2.0", "cfg: '2.0' is not a number. Set a number from 0.0 to 100.0."),
        (True, "cfg: True is not a number. Set a number from 0.0 to 100.0."),
        (2.0, None),
        (0, None),
    ],
)
def test_a_setting_must_be_a_finite_number_in_its_range(pack, value, expected):
    from comfyui_tryon.preprocess.settings import setting_problem

    problem = setting_problem("cfg", value, 0.0, 100.0)
    assert problem is None if expected is None else problem.startswith(expected), problem


def test_every_float_input_of_the_pack_is_checked_by_its_node(pack):
    """Each node with a FLOAT input lists all of them in validate_inputs (widget values), and refuses NaN there."""
    import inspect

    from comfy_api.latest import io
    from comfyui_tryon.nodes import NODE_LIST

    for node in NODE_LIST:
        floats = [i.id for i in node.define_schema().inputs if isinstance(i, io.Float.Input)]
        if not floats:
            continue
        assert set(floats) <= set(inspect.signature(node.validate_inputs).parameters), node.__name__
        for name in floats:
            assert f"{name}: nan is not a finite number" in node.validate_inputs(**{name: float("nan")}), (node.__name__, name)


@pytest.mark.parametrize("part", ["unet", "unet_encoder"])
def test_the_published_idm_vton_layouts_are_exactly_the_expected_sets(pack, checks, part):
    """The real TryonNet (1871 tensors, IP-Adapter on all 70 cross-attentions) and GarmentNet (1676 + 4 stray
    add_embedding tensors) key lists, as meta tensors: the check's expected set is exactly theirs, shape for shape."""
    from comfyui_tryon.models.garment_net import STRAY_ADM_PREFIX, GarmentNetConfig
    from comfyui_tryon.models.sdxl_unet import convert_unet_keys, unet_config_from_diffusers, without_adm
    from comfyui_tryon.models.tryon_net import TryonNetConfig, split_tryon_state_dict
    from tiny_models import LAYOUTS

    rows = [line.split("\t") for line in (LAYOUTS / "idm_vton_hf_layout" / f"{part}.keys.tsv").read_text().splitlines() if line.strip()]
    layout = {key: torch.empty(tuple(int(v) for v in shape.strip("()").split(",") if v.strip()), device="meta") for key, shape in rows}
    if part == "unet":
        config, comfy_unet, ip_layout, resampler, extra, _ = split_tryon_state_dict(layout, "tryon_net_name")
        weights, model_config = {**comfy_unet, **extra}, TryonNetConfig(config, ip_layout, resampler)
        assert len(layout) == 1871 and len(ip_layout) == 70
    else:
        config = without_adm(unet_config_from_diffusers(layout, "garment_net_name"))
        weights, _ = convert_unet_keys(layout, config, "garment_net_name", ignored_prefixes=(STRAY_ADM_PREFIX,))
        weights = {k: v for k, v in weights.items() if not k.startswith("label_emb.")}
        model_config = GarmentNetConfig(config)
        assert len(weights) == 1676
    expected = checks.comfy_model_shapes(model_config, weights, source(checks))
    assert set(expected) == set(weights)
    assert all(tuple(expected[k]) == tuple(v.shape) for k, v in weights.items())
