"""Reliability matrix, model files: bad, wrong and malicious weights through a real ComfyUI server.

Each case: the prompt fails with a message that names the node input and the fix, the server stays alive,
and the next valid prompt succeeds.
"""

from __future__ import annotations

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
VANISHED = ("not in ComfyUI/models/idm_vton any more", "Put the file back")

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


@pytest.mark.parametrize("node,input_name", [("tryon", "tryon_net_name"), ("vision", "clip_name")])
def test_a_model_name_not_in_the_list_is_rejected_by_validation(host, node, input_name):
    graph = rh.graph()
    graph[node]["inputs"][input_name] = "no_such_model.safetensors"
    status, message, answer = rh.outcome(host, graph)
    assert status == "rejected", message
    errors = answer["node_errors"][node]["errors"]
    assert errors[0]["type"] == "value_not_in_list" and input_name in errors[0]["details"], errors
    assert "no_such_model.safetensors" in errors[0]["details"]
    rh.assert_recovers(host)


def test_the_bad_files_are_listed_so_the_cases_above_reach_our_code(host):
    listed = rh.listed(host, "IDMVTONTryonNetLoader", "tryon_net_name")
    for name in ("empty.bin", "truncated.bin", "malicious_pickle.bin", "sd15_unet.safetensors", "vanished.safetensors"):
        assert f"{rh.BAD}/{name}" in listed, listed
    assert rh.WRONG_VISION in rh.listed(host, "CLIPVisionLoader", "clip_name")
