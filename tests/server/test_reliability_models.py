"""Reliability matrix, model files: bad, wrong and malicious weights through a real ComfyUI server.

Each case: the prompt fails with a message that names the node input and the fix, the server stays alive,
and the next valid prompt succeeds.
"""

from __future__ import annotations

import numpy as np
import pytest
import reliability_host as rh
from graphs import GARMENT_NET, TRYON_NET
from pickle_inspect import file_pickle_globals, pickle_globals


def tryon_loader(name: str) -> dict:
    return {"class_type": "IDMVTONTryonNetLoader", "inputs": {"tryon_net_name": name, "weight_dtype": "default"}}


def garment_loader(name: str) -> dict:
    return {"class_type": "IDMVTONGarmentNetLoader", "inputs": {"garment_net_name": name, "weight_dtype": "default"}}


def with_garment_loader(name: str) -> dict:
    graph = rh.graph(garment_net=garment_loader(name))
    graph["apply"]["inputs"]["garment_model"] = ["garment_net", 0]
    return graph


def rewired(input_name: str, source: list) -> dict:
    graph = rh.graph()
    graph["apply"]["inputs"][input_name] = source
    return graph


UNREADABLE = ("cannot read", "truncated", "corrupt", "Download it again")
SAFETY = ("asks to run code", "refused for safety", "nothing in it ran", "safetensors")
NOT_TRYON = ("not an IDM-VTON TryonNet", "4 input channels", "Pick IDM-VTON's unet/ weights", "GarmentNet input")
CHECKPOINT = ("full Stable Diffusion checkpoint", "'Load Checkpoint' node", "garment_model")
VANISHED = ("not in ComfyUI/models/idm_vton", "moved, deleted, or a broken link", "Put the file there", "refresh")  # model_folders.resolve

# case id -> (graph builder, node input named in the error, fragments of the fix)
LOADER_CASES = {
    "tryon-empty-file": (lambda: rh.graph(tryon=tryon_loader(f"{rh.BAD}/empty.bin")), "tryon_net_name", ("empty (0 bytes)", "Download it again")),
    "tryon-truncated-pickle": (lambda: rh.graph(tryon=tryon_loader(f"{rh.BAD}/truncated.bin")), "tryon_net_name", UNREADABLE),
    "tryon-random-bytes-pickle": (lambda: rh.graph(tryon=tryon_loader(f"{rh.BAD}/random_bytes.bin")), "tryon_net_name", UNREADABLE),
    "tryon-random-bytes-safetensors": (lambda: rh.graph(tryon=tryon_loader(f"{rh.BAD}/random_bytes.safetensors")), "tryon_net_name", UNREADABLE),
    "tryon-truncated-safetensors": (lambda: rh.graph(tryon=tryon_loader(f"{rh.BAD}/truncated.safetensors")), "tryon_net_name", UNREADABLE),
    "tryon-sd15-unet": (lambda: rh.graph(tryon=tryon_loader(f"{rh.BAD}/sd15_unet.safetensors")), "tryon_net_name", NOT_TRYON),
    "tryon-sdxl-base-unet": (lambda: rh.graph(tryon=tryon_loader(GARMENT_NET)), "tryon_net_name", NOT_TRYON),
    "tryon-sdxl-checkpoint": (lambda: rh.graph(tryon=tryon_loader(f"{rh.BAD}/sdxl_checkpoint.safetensors")), "tryon_net_name", CHECKPOINT),
    "tryon-vanished-file": (lambda: rh.graph(tryon=tryon_loader(f"{rh.BAD}/vanished.safetensors")), "tryon_net_name", VANISHED),
    "garment-empty-file": (lambda: with_garment_loader(f"{rh.BAD}/empty.safetensors"), "garment_net_name", ("empty (0 bytes)", "Download it again")),
    "garment-truncated-safetensors": (lambda: with_garment_loader(f"{rh.BAD}/truncated.safetensors"), "garment_net_name", UNREADABLE),
    "garment-random-bytes": (lambda: with_garment_loader(f"{rh.BAD}/random_bytes.safetensors"), "garment_net_name", UNREADABLE),
    "garment-given-tryonnet": (lambda: with_garment_loader(TRYON_NET), "garment_net_name", ("13 input channels", "TryonNet loader")),
    "garment-sdxl-checkpoint": (lambda: with_garment_loader(f"{rh.BAD}/sdxl_checkpoint.safetensors"), "garment_net_name", CHECKPOINT),
    "garment-vanished-file": (lambda: with_garment_loader(f"{rh.BAD}/vanished.safetensors"), "garment_net_name", VANISHED),
}

# Wrong MODELs reach the apply node: the error names the apply node's input
APPLY_CASES = {
    "apply-tryonnet-as-garment-model": (lambda: rewired("garment_model", ["tryon", 0]), "garment_model", ("13-channel TryonNet", "GarmentNet loader")),
    "apply-sdxl-as-tryon-model": (lambda: rewired("tryon_model", ["ckpt", 0]), "tryon_model", ("not an IDM-VTON TryonNet", "TryonNet Loader")),
    "apply-sd15-as-garment-model": (lambda: with_garment_loader(f"{rh.BAD}/sd15_unet.safetensors"), "garment_model", ("widths differ", "SDXL base")),
    "apply-clip-vision-of-wrong-width": (
        lambda: rh.graph(vision={"class_type": "CLIPVisionLoader", "inputs": {"clip_name": rh.WRONG_VISION}}),
        "clip_vision",
        ("48-wide", "needs 64", "CLIP-ViT-H-14", "CLIPVisionLoader"),
    ),
}


@pytest.mark.parametrize("case", [*LOADER_CASES, *APPLY_CASES])
def test_a_bad_model_fails_with_a_clear_message_and_the_server_recovers(host, case):
    build, input_name, fix = {**LOADER_CASES, **APPLY_CASES}[case]
    status, message, _ = rh.outcome(host, build())
    assert status == "error", (status, message)
    assert "TryOnInputError" in message and input_name in message, message
    for fragment in fix:
        assert fragment in message, (fragment, message)
    rh.assert_recovers(host)


def test_the_malicious_payloads_really_would_run_code_when_unpickled_unsafely(tmp_path):
    assert "builtins.exec" in pickle_globals(rh.malicious_pickle_bytes(tmp_path / "plain.created"))
    rh.write_malicious_zip(tmp_path / "zip.bin", tmp_path / "zip.created")
    assert "builtins.exec" in file_pickle_globals(tmp_path / "zip.bin")
    assert not (tmp_path / "plain.created").exists() and not (tmp_path / "zip.created").exists()  # inspected, never run


@pytest.mark.parametrize("kind", ["malicious_pickle", "malicious_zip"])
@pytest.mark.parametrize("loader", ["tryon", "garment"])
def test_a_malicious_pickle_is_refused_and_runs_nothing(host, loader, kind):
    name = f"{rh.BAD}/{kind}.bin"
    graph = rh.graph(tryon=tryon_loader(name)) if loader == "tryon" else with_garment_loader(name)
    status, message, _ = rh.outcome(host, graph)
    assert status == "error", (status, message)
    assert f"{loader}_net_name" in message and "exec" in message, message
    for fragment in SAFETY:
        assert fragment in message, (fragment, message)
    assert not (host.markers / f"{kind}.created").exists()
    rh.assert_recovers(host)


def test_a_model_name_not_in_the_list_is_rejected_by_validation_in_a_stock_loader(host):
    graph = rh.graph()
    graph["vision"]["inputs"]["clip_name"] = "no_such_model.safetensors"
    status, message, answer = rh.outcome(host, graph)
    assert status == "rejected", message
    errors = answer["node_errors"]["vision"]["errors"]
    assert errors[0]["type"] == "value_not_in_list" and "clip_name" in errors[0]["details"], errors
    assert "no_such_model.safetensors" in errors[0]["details"]
    rh.assert_recovers(host)


# A V3 combo value outside its options: ComfyUI 0.3.75 does not check it (later versions reject it as value_not_in_list),
# so the node's own check names the input: at validation (the sampler) or when the node runs (loaders).
COMBO_CASES = {
    "tryon-name-not-listed": ("tryon", "tryon_net_name", "no_such_model.safetensors", ("not in ComfyUI/models/idm_vton", "pick a listed file")),
    "tryon-unknown-dtype": ("tryon", "weight_dtype", "fp4", ("must be one of default, fp16, bf16, fp8_e4m3fn", "'fp4'")),
    "garment-unknown-dtype": ("garment_net", "weight_dtype", "fp4", ("must be one of default, fp16, bf16, fp8_e4m3fn",)),
    "sampler-unknown-sampler": ("sample", "sampler_name", "no_such_sampler", ("is not one of ComfyUI's samplers", "euler")),
    "sampler-unknown-scheduler": ("sample", "scheduler", "no_such_scheduler", ("is not one of ComfyUI's schedulers", "karras")),
    "fit-unknown-mode": ("garment_fit", "mode", "zoom", ("must be one of crop, pad, stretch",)),
}


def graph_with_every_combo_node() -> dict:
    graph = with_garment_loader(GARMENT_NET)
    graph["sample"] = {"class_type": "IDMVTONSampler", "inputs": {k: v for k, v in graph["sample"]["inputs"].items() if k != "denoise"}}
    graph["garment_fit"] = {"class_type": "TryOnFitImage", "inputs": {"image": ["garment", 0], "width": rh.WIDTH, "height": rh.HEIGHT, "mode": "pad"}}
    graph["apply"]["inputs"]["garment_image"] = ["garment_fit", 0]
    return graph


def test_the_graph_with_every_combo_node_runs(host):
    status, message, _ = rh.outcome(host, graph_with_every_combo_node())
    assert status == "success", message


@pytest.mark.parametrize("case", list(COMBO_CASES))
def test_a_combo_value_outside_its_options_names_the_input(host, case):
    node, input_name, value, fix = COMBO_CASES[case]
    graph = graph_with_every_combo_node()
    graph[node]["inputs"][input_name] = value
    status, message, answer = rh.outcome(host, graph)
    if status == "rejected":
        errors = answer["node_errors"][node]["errors"]
        assert errors[0]["type"] in ("custom_validation_failed", "value_not_in_list") and input_name in errors[0]["details"], errors
        message = errors[0]["details"] if errors[0]["type"] == "custom_validation_failed" else ""
    else:
        assert status == "error" and "TryOnInputError" in message, (status, message)
    for fragment in (f"{input_name}:", *fix) if message else ():  # ComfyUI's own value_not_in_list names the input only
        assert fragment in message, (fragment, message)
    rh.assert_recovers(host)


# ----------------------------------------------------------------------------------------------
# Damaged weight files (every loader of the pack): refused before a network is built, naming the input, the file, what
# is wrong and the fix; the files are reliability_host.DAMAGED
# ----------------------------------------------------------------------------------------------
def damaged(folder: str, name: str) -> str:
    return rh.damaged(folder, name)


def mask_node(image: str, atr_model: str = "parsing_atr.onnx", pose_model: str = "none") -> dict:
    return {
        "photo": rh.load_image(image),
        "agnostic": {
            "class_type": "TryOnAgnosticMask",
            "inputs": {
                "image": ["photo", 0],
                "atr_model": atr_model,
                "lip_model": "none",
                "pose_model": pose_model,
                "category": "upper_body",
                "model_type": "hd",
                "grow": 0,
                "feather": 0,
            },
        },
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["agnostic", 0]}},
    }


def densepose_node(model: str) -> dict:
    return {
        "photo": rh.load_image(rh.base_inputs()["person"]),
        "densepose_node": {
            "class_type": "TryOnDensePose",
            "inputs": {
                "image": ["photo", 0],
                "densepose_model": model,
                "detection_resolution": 64,
                "score_threshold": 0.8,
                "person": "largest",
                "colormap": "parula",
            },
        },
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["densepose_node", 0]}},
    }


def caption_node(model: str) -> dict:
    return {
        "garment": rh.load_image(rh.base_inputs()["garment"]),
        "caption": {
            "class_type": "TryOnGarmentCaption",
            "inputs": {"garment_image": ["garment", 0], "category": "upper_body", "caption_model": model, "description": ""},
        },
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["caption", 0]}},
    }


def ootd_loader(name: str) -> dict:
    return {
        "unet": {"class_type": "OOTDiffusionUNetLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["unet", 0]}},
    }


IDM_FIX = ("Download it again (yisol/IDM-VTON", "convert it again with tools/convert_idm_weights.py")
MISSING = "is incomplete, damaged or of another network: 1 tensor(s) missing ("
NOT_FINITE = "holds NaN or infinite values in"
# case id -> (prompt, node type that fails, node input, file name as the message shows it, fragments)
DAMAGED_CASES = {
    "tryon-one-unet-tensor-missing": (
        lambda: rh.graph(tryon=tryon_loader(damaged("idm_vton", "tryon_missing_tensor.safetensors"))),
        "IDMVTONTryonNetLoader",
        "tryon_net_name",
        "tryon_missing_tensor.safetensors",
        (MISSING, "attn1.to_q.weight)", *IDM_FIX),
    ),
    "tryon-one-ip-tensor-missing": (
        lambda: rh.graph(tryon=tryon_loader(damaged("idm_vton", "tryon_missing_ip.safetensors"))),
        "IDMVTONTryonNetLoader",
        "tryon_net_name",
        "tryon_missing_ip.safetensors",
        (MISSING, "attn2.processor.to_k_ip.weight)", *IDM_FIX),
    ),
    "tryon-tensor-of-the-wrong-shape": (
        lambda: rh.graph(tryon=tryon_loader(damaged("idm_vton", "tryon_wrong_shape.safetensors"))),
        "IDMVTONTryonNetLoader",
        "tryon_net_name",
        "tryon_wrong_shape.safetensors",
        ("has tensors of the wrong shape (", "attn1.to_q.weight is (", "where the network needs (", *IDM_FIX),
    ),
    "tryon-integer-tensors": (
        lambda: rh.graph(tryon=tryon_loader(damaged("idm_vton", "tryon_integers.safetensors"))),
        "IDMVTONTryonNetLoader",
        "tryon_net_name",
        "tryon_integers.safetensors",
        ("holds int32 values in", "not floating-point weights", *IDM_FIX),
    ),
    "tryon-all-nan": (
        lambda: rh.graph(tryon=tryon_loader(damaged("idm_vton", "tryon_nan.safetensors"))),
        "IDMVTONTryonNetLoader",
        "tryon_net_name",
        "tryon_nan.safetensors",
        (NOT_FINITE, "more)", *IDM_FIX),
    ),
    "tryon-one-infinite-value": (
        lambda: rh.graph(tryon=tryon_loader(damaged("idm_vton", "tryon_one_inf.safetensors"))),
        "IDMVTONTryonNetLoader",
        "tryon_net_name",
        "tryon_one_inf.safetensors",
        (f"{NOT_FINITE} 1 tensor(s) (conv_out.weight)", *IDM_FIX),
    ),
    "garment-one-unet-tensor-missing": (
        lambda: with_garment_loader(damaged("idm_vton", "garment_missing_tensor.safetensors")),
        "IDMVTONGarmentNetLoader",
        "garment_net_name",
        "garment_missing_tensor.safetensors",
        (MISSING, "attn2.to_v.weight)", "unet_encoder/diffusion_pytorch_model.safetensors"),
    ),
    "garment-all-nan": (
        lambda: with_garment_loader(damaged("idm_vton", "garment_nan.safetensors")),
        "IDMVTONGarmentNetLoader",
        "garment_net_name",
        "garment_nan.safetensors",
        (NOT_FINITE, "unet_encoder/diffusion_pytorch_model.safetensors"),
    ),
    "openpose-one-tensor-missing": (
        lambda: mask_node(rh.base_inputs()["person"], pose_model=damaged("openpose", "missing_tensor.pth")),
        "TryOnAgnosticMask",
        "pose_model",
        "missing_tensor.pth",
        (MISSING, "Mconv4_stage3_L2.weight)", "download body_pose_model.pth again"),
    ),
    "openpose-tensor-of-the-wrong-shape": (
        lambda: mask_node(rh.base_inputs()["person"], pose_model=damaged("openpose", "wrong_shape.pth")),
        "TryOnAgnosticMask",
        "pose_model",
        "wrong_shape.pth",
        ("has tensors of the wrong shape (conv3_2.weight is (", "download body_pose_model.pth again"),
    ),
    "openpose-one-nan-value": (
        lambda: mask_node(rh.base_inputs()["person"], pose_model=damaged("openpose", "nan.pth")),
        "TryOnAgnosticMask",
        "pose_model",
        "nan.pth",
        (f"{NOT_FINITE} 1 tensor(s) (Mconv2_stage5_L1.weight)", "download body_pose_model.pth again"),
    ),
    "densepose-nan-parameter": (
        lambda: densepose_node(damaged("densepose", "nan.torchscript")),
        "TryOnDensePose",
        "densepose_model",
        "'nan.torchscript'",
        (f"{NOT_FINITE} 1 tensor(s) (anchor)", "Download densepose_r50_fpn_dl.torchscript"),
    ),
    "densepose-integer-parameter": (
        lambda: densepose_node(damaged("densepose", "integer.torchscript")),
        "TryOnDensePose",
        "densepose_model",
        "'integer.torchscript'",
        ("holds int64 values in 1 tensor(s) (anchor)", "Download densepose_r50_fpn_dl.torchscript"),
    ),
    "parsing-nan-weights-inside-the-onnx-graph": (
        lambda: mask_node(rh.base_inputs()["person"], atr_model=damaged("humanparsing", "parsing_atr_nan.onnx")),
        "TryOnAgnosticMask",
        "atr_model",
        "parsing_atr_nan.onnx",
        ("returned NaN or infinite values: its weights are damaged", "Download the SCHP parsing model again"),
    ),
    "caption-one-tensor-missing": (
        lambda: caption_node(damaged("garment_caption", "missing_tensor")),
        "TryOnGarmentCaption",
        "caption_model",
        "'reliability-missing_tensor' (model.safetensors)",
        (MISSING, "mlp.fc1.weight)", "Download the model folder again"),
    ),
    "caption-all-nan": (
        lambda: caption_node(damaged("garment_caption", "nan")),
        "TryOnGarmentCaption",
        "caption_model",
        "'reliability-nan' (model.safetensors)",
        (NOT_FINITE, "Download the model folder again"),
    ),
    "ootd-one-unet-tensor-missing": (
        lambda: ootd_loader(damaged("diffusion_models", "ootd_garm_missing_tensor.safetensors")),
        "OOTDiffusionUNetLoader",
        "unet_name",
        "ootd_garm_missing_tensor.safetensors",
        (MISSING, "attn1.to_k.weight)", "Download it again"),
    ),
    "ootd-all-nan": (
        lambda: ootd_loader(damaged("diffusion_models", "ootd_garm_nan.safetensors")),
        "OOTDiffusionUNetLoader",
        "unet_name",
        "ootd_garm_nan.safetensors",
        (NOT_FINITE, "Download it again"),
    ),
}


@pytest.mark.parametrize("case", list(DAMAGED_CASES))
def test_a_damaged_weights_file_is_refused_naming_the_input_the_file_and_the_fix(host, case):
    build, node_type, input_name, file_name, fragments = DAMAGED_CASES[case]
    status, message, _ = rh.outcome(host, build())
    assert status == "error", (status, message)
    assert message.startswith(f"{node_type}:") and "TryOnInputError" in message and f"{input_name}: {file_name} " in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    rh.assert_recovers(host)


def cached_nodes(entry: dict) -> list[str]:
    return [node for kind, data in entry["status"]["messages"] if kind == "execution_cached" for node in data["nodes"]]


def test_the_same_seed_gives_the_same_image_after_every_load_of_the_weights(host):
    """TryonNet loaded three times (the same file under two names no other test uses, then the first again, which the
    second prompt evicted from ComfyUI's cache), each load a fresh model: the same seed gives a bit-identical image every
    time, so no uninitialised weight reaches sampling."""
    first, second = rh.TRYON_COPIES
    results = []
    for name in (first, second, first):
        status, message, entry = rh.outcome(host, rh.graph(seed=321, tryon=tryon_loader(name)), keep_cache=False)
        assert status == "success", message
        assert "tryon" not in cached_nodes(entry)  # built again from the file
        (image,) = rh.images(host, entry)
        results.append(image)
    assert results[0].std() > 0
    for image in results[1:]:
        assert np.array_equal(image, results[0])
    rh.assert_recovers(host)
