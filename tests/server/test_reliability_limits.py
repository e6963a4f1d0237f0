"""Reliability matrix, limits every node shares, through the shared reliability server (tests/support/reliability_host.py).

- Resizes are bounded: a node that scales an image (DensePose's detection_resolution, the caption model's image
  processor, the fit and crop sizes) refuses a result over 4096 px a side or 4096 x 4096 pixels, naming the input and
  its actual size; the server's memory does not grow on a very thin image.
- Images under 2 px a side are "too small" in every node that takes an image.
- FLOAT settings that are NaN or infinite are refused by the node that receives them: at validation for widget values,
  when the node runs for linked values.
- A mask with a side of zero size gets the same message in every node that takes a mask.

Each case fails with a TryOnInputError (or a validation error) naming the input, the server stays alive, and the next
valid try-on prompt succeeds.
"""

from __future__ import annotations

import fixtures_caption
import fixtures_densepose
import pytest
import reliability_host as rh
import torch

W, H = rh.WIDTH, rh.HEIGHT
GROWTH_BOUND = 200 * 2**20  # bytes of server RSS, over the thin-image cases


def tensor_node(host, name: str, tensor: torch.Tensor) -> dict:
    """An IMAGE (4 dims) or MASK (3 dims) node reading `tensor` from the input folder."""
    rh.write_tensor(host, f"limits_{name}.safetensors", tensor)
    return rh.tensor_mask(f"limits_{name}.safetensors") if tensor.ndim == 3 else rh.tensor_image(f"limits_{name}.safetensors")


def image(width: int, height: int) -> torch.Tensor:
    return torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(width * 7 + height))


def mask(width: int, height: int) -> torch.Tensor:
    return torch.ones(1, height, width)


def show(source: list) -> dict:
    return {"class_type": "PreviewAny", "inputs": {"source": source}}


def primitive(value, kind: str = "PrimitiveFloat") -> dict:
    return {"class_type": kind, "inputs": {"value": value}}


# ----------------------------------------------------------------------------------------------
# One prompt per node, its image/mask inputs taken from nodes `person`, `garment`, `mask` (defaults: the base files)
# ----------------------------------------------------------------------------------------------
def base_nodes(**overrides) -> dict:
    names = rh.base_inputs()
    nodes = {
        "person": rh.load_image(names["person"]),
        "garment": rh.load_image(names["garment"]),
        "mask_image": rh.load_image(names["mask"]),
        "mask": {"class_type": "ImageToMask", "inputs": {"image": ["mask_image", 0], "channel": "red"}},
    }
    nodes.update(overrides)
    return nodes


def fit_prompt(**overrides) -> dict:
    node = {"class_type": "TryOnFitImage", "inputs": {"image": ["person", 0], "width": W, "height": H, "mode": "pad"}}
    return {**base_nodes(**overrides), "node": node, "show": show(["node", 0])}


def mask_node_prompt(**overrides) -> dict:
    inputs = {
        "image": ["person", 0],
        "atr_model": "parsing_atr.onnx",
        "lip_model": "none",
        "pose_model": "none",
        "category": "upper_body",
        "model_type": "hd",
        "grow": 0,
        "feather": 0,
        "user_mask": ["mask", 0],
    }
    return {**base_nodes(**overrides), "node": {"class_type": "TryOnAgnosticMask", "inputs": inputs}, "show": show(["node", 0])}


def densepose_prompt(resolution=64, threshold=0.8, **overrides) -> dict:
    inputs = {
        "image": ["person", 0],
        "densepose_model": fixtures_densepose.TUPLE_MODEL,
        "detection_resolution": resolution,
        "score_threshold": threshold,
        "person": "largest",
        "colormap": "parula",
    }
    return {**base_nodes(**overrides), "node": {"class_type": "TryOnDensePose", "inputs": inputs}, "show": show(["node", 0])}


def crop_prompt(margin=0.1, height=H, **overrides) -> dict:
    inputs = {"image": ["person", 0], "width": W, "height": height, "margin": margin, "person_source": "mask", "mask": ["mask", 0]}
    return {**base_nodes(**overrides), "node": {"class_type": "TryOnPersonCrop", "inputs": inputs}, "show": show(["node", 0])}


def paste_prompt(**overrides) -> dict:
    inputs = {"original_image": ["person", 0], "tryon_image": ["garment", 0], "mask": ["mask", 0], "grow": 0, "feather": 0}
    return {**base_nodes(**overrides), "node": {"class_type": "TryOnPasteBack", "inputs": inputs}, "show": show(["node", 0])}


def caption_prompt(caption_model: str = "none", description: str = "short sleeve round neck t-shirts", **overrides) -> dict:
    inputs = {"garment_image": ["garment", 0], "category": "upper_body", "caption_model": caption_model, "description": description}
    return {**base_nodes(**overrides), "node": {"class_type": "TryOnGarmentCaption", "inputs": inputs}, "show": show(["node", 0])}


def apply_prompt(**overrides) -> dict:
    """The try-on graph; `person`, `garment`, `densepose` and `mask` override its input nodes."""
    return rh.graph(**overrides)


def sampler_graph(**apply_inputs) -> dict:
    """The try-on graph sampled by IDM-VTON Sampler (no denoise input), with `apply_inputs` set on the apply node."""
    graph = rh.graph()
    graph["sample"] = {"class_type": "IDMVTONSampler", "inputs": {k: v for k, v in graph["sample"]["inputs"].items() if k != "denoise"}}
    graph["apply"]["inputs"].update(apply_inputs)
    return graph


def fails(host, prompt: dict, node_type: str, *fragments: str) -> str:
    status, message, _ = rh.outcome(host, prompt)
    assert status == "error", (status, message)
    assert message.startswith(f"{node_type}:") and "TryOnInputError" in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ----------------------------------------------------------------------------------------------
# Images under 2 px a side: "too small" from every node that takes an image
# ----------------------------------------------------------------------------------------------
# case id -> (prompt builder taking the bad image node, node type, input named)
IMAGE_INPUTS = {
    "apply-person_image": (lambda bad: apply_prompt(person=bad), "IDMVTONApply", "person_image"),
    "apply-garment_image": (lambda bad: apply_prompt(garment=bad), "IDMVTONApply", "garment_image"),
    "apply-densepose_image": (lambda bad: apply_prompt(densepose=bad), "IDMVTONApply", "densepose_image"),
    "mask-image": (lambda bad: mask_node_prompt(person=bad), "TryOnAgnosticMask", "image"),
    "densepose-image": (lambda bad: densepose_prompt(person=bad), "TryOnDensePose", "image"),
    "crop-image": (lambda bad: crop_prompt(person=bad), "TryOnPersonCrop", "image"),
    "paste-original_image": (lambda bad: paste_prompt(person=bad), "TryOnPasteBack", "original_image"),
    "paste-tryon_image": (lambda bad: paste_prompt(garment=bad), "TryOnPasteBack", "tryon_image"),
    "caption-garment_image": (lambda bad: caption_prompt(garment=bad), "TryOnGarmentCaption", "garment_image"),
    "fit-image": (lambda bad: fit_prompt(person=bad), "TryOnFitImage", "image"),
}


@pytest.mark.parametrize("size", [(1, 64), (64, 0)], ids=["1px-wide", "zero-high"])
@pytest.mark.parametrize("case", list(IMAGE_INPUTS))
def test_an_image_under_2px_a_side_is_too_small_in_every_node(host, case, size):
    build, node_type, input_name = IMAGE_INPUTS[case]
    bad = tensor_node(host, f"small_{size[0]}x{size[1]}", image(*size))
    fails(host, build(bad), node_type, f"{input_name}: the image is {size[0]}x{size[1]} pixels, too small (at least 2px a side)")
    rh.assert_recovers(host)


# ----------------------------------------------------------------------------------------------
# Masks with a side of zero size: one message everywhere
# ----------------------------------------------------------------------------------------------
MASK_INPUTS = {
    "apply-mask": (lambda bad: apply_prompt(mask=bad), "IDMVTONApply", "mask"),
    "mask-node-user_mask": (lambda bad: mask_node_prompt(mask=bad), "TryOnAgnosticMask", "user_mask"),
    "crop-mask": (lambda bad: crop_prompt(mask=bad), "TryOnPersonCrop", "mask"),
    "paste-mask": (lambda bad: paste_prompt(mask=bad), "TryOnPasteBack", "mask"),
}


@pytest.mark.parametrize("size", [(W, 0), (0, H)], ids=["zero-high", "zero-wide"])
@pytest.mark.parametrize("case", list(MASK_INPUTS))
def test_a_mask_with_a_side_of_zero_size_gets_the_same_message_in_every_node(host, case, size):
    build, node_type, input_name = MASK_INPUTS[case]
    bad = tensor_node(host, f"mask_{size[0]}x{size[1]}", mask(*size))
    fails(host, build(bad), node_type, f"{input_name}: the mask is {size[0]}x{size[1]} pixels (batch 1), a side of zero size", "Connect a mask")
    rh.assert_recovers(host)


# ----------------------------------------------------------------------------------------------
# Non-finite FLOAT settings: refused by the node that receives them
# ----------------------------------------------------------------------------------------------
def with_input(graph: dict, node_id: str, input_name: str, value) -> dict:
    graph[node_id]["inputs"][input_name] = value
    return graph


# case id -> (graph builder taking the value, node id, input)
FLOAT_INPUTS = {
    "apply-ip_adapter_strength": (lambda value: sampler_graph(ip_adapter_strength=value), "apply", "ip_adapter_strength"),
    "apply-garment_strength": (lambda value: sampler_graph(garment_strength=value), "apply", "garment_strength"),
    "sampler-cfg": (lambda value: with_input(sampler_graph(), "sample", "cfg", value), "sample", "cfg"),
    "densepose-score_threshold": (lambda value: densepose_prompt(threshold=value), "node", "score_threshold"),
    "crop-margin": (lambda value: crop_prompt(margin=value), "node", "margin"),
}


@pytest.mark.parametrize("value", ["NaN", "inf", "-inf"])
@pytest.mark.parametrize("case", list(FLOAT_INPUTS))
def test_a_non_finite_float_widget_is_refused_before_the_prompt_runs(host, case, value):
    """ "NaN" in an API prompt passes ComfyUI's own min/max check; the node's validation names its input."""
    build, node_id, input_name = FLOAT_INPUTS[case]
    status, message, answer = rh.outcome(host, build(value))
    assert status == "rejected", (status, message)
    errors = answer["node_errors"][node_id]["errors"]
    assert errors[0]["type"] == "custom_validation_failed", errors
    assert f"{input_name}: {float(value)} is not a finite number" in errors[0]["details"], errors
    rh.assert_recovers(host)


@pytest.mark.parametrize("case", list(FLOAT_INPUTS))
def test_a_float_widget_out_of_its_range_is_still_refused(host, case):
    """Naming an input in validate_inputs switches ComfyUI's min/max check off for it: the node's own check keeps it."""
    build, node_id, input_name = FLOAT_INPUTS[case]
    status, message, answer = rh.outcome(host, build(1000.0))
    assert status == "rejected", (status, message)
    errors = answer["node_errors"][node_id]["errors"]
    assert f"{input_name}: 1000.0 is outside its range. Set a number from " in errors[0]["details"], errors
    rh.assert_recovers(host)


NODE_TYPES = {"apply": "IDMVTONApply", "sample": "IDMVTONSampler"}


@pytest.mark.parametrize("case", list(FLOAT_INPUTS))
def test_a_non_finite_float_from_a_link_is_refused_when_the_node_runs(host, case):
    build, node_id, input_name = FLOAT_INPUTS[case]
    graph = build(["nan_value", 0])
    graph["nan_value"] = primitive("NaN")
    node_type = NODE_TYPES.get(node_id) or graph[node_id]["class_type"]
    fails(host, graph, node_type, f"{input_name}: nan is not a finite number")
    rh.assert_recovers(host)


# ----------------------------------------------------------------------------------------------
# Bounded resizes
# ----------------------------------------------------------------------------------------------
LIMIT = "over the 4096px limit a side (4096x4096 pixels in all)"
RESIZE_CASES = {
    "densepose-thin-image": (
        lambda host: densepose_prompt(resolution=512, person=tensor_node(host, "thin_2x512", image(2, 512))),
        "TryOnDensePose",
        ("image: 2x512 scaled so that its shorter side is detection_resolution (512) would become 512x131072", LIMIT, "lower detection_resolution"),
    ),
    "densepose-linked-detection_resolution": (
        lambda host: {**densepose_prompt(resolution=["big", 0]), "big": primitive(100000, "PrimitiveInt")},
        "TryOnDensePose",
        (f"image: {W}x{H} scaled so that its shorter side is detection_resolution (100000) would become 100000x125000", LIMIT),
    ),
    "caption-thin-garment": (
        lambda host: caption_prompt(fixtures_caption.TINY_CLIP, "", garment=tensor_node(host, "thin_2x600", image(2, 600))),
        "TryOnGarmentCaption",
        ("garment_image: 2x600 resized by the caption model's image processor would become 32x9600", LIMIT, "Try-On Fit Image"),
    ),
    "fit-linked-width": (
        lambda host: {**with_input(fit_prompt(), "node", "width", ["big", 0]), "big": primitive(100000, "PrimitiveInt")},
        "TryOnFitImage",
        (f"width / height: {W}x{H} fitted to width x height would become 100000x{H}", LIMIT),
    ),
    "crop-linked-height": (
        lambda host: {**crop_prompt(height=["big", 0]), "big": primitive(100000, "PrimitiveInt")},
        "TryOnPersonCrop",
        (f"width / height: {W}x{H} cropped and resized to width x height would become {W}x100000", LIMIT),
    ),
    "crop-linked-height-zero": (
        lambda host: {**crop_prompt(height=["big", 0]), "big": primitive(0, "PrimitiveInt")},
        "TryOnPersonCrop",
        (f"width / height: {W}x{H} cropped and resized to width x height would become {W}x0, under 2px a side",),
    ),
}


@pytest.mark.parametrize("case", list(RESIZE_CASES))
def test_a_resize_past_the_limit_is_refused_naming_the_input_and_its_size(host, case):
    build, node_type, fragments = RESIZE_CASES[case]
    fails(host, build(host), node_type, *fragments)
    rh.assert_recovers(host)


def test_thin_images_into_densepose_do_not_grow_the_server_memory(host):
    """A 2x512 image scaled to a 512 shorter side would be 512x262144 px (and 2x4096 at 4096, 8 G px): refused before
    anything is allocated, so the server's memory stays within 200 MB."""
    status, message, _ = rh.outcome(host, densepose_prompt(resolution=512))  # the model loaded, a normal run done
    assert status == "success", message
    before = rh.rss_bytes(host)
    for width, height, resolution in ((1, 512, 512), (2, 512, 512), (2, 4096, 4096), (4096, 2, 4096)):
        prompt = densepose_prompt(resolution=resolution, person=tensor_node(host, f"thin_{width}x{height}", image(width, height)))
        message = fails(host, prompt, "TryOnDensePose", f"{width}x{height}")
        assert "too small" in message if width == 1 else f"image: {width}x{height} scaled so that its shorter side is" in message, message
    growth = rh.rss_bytes(host) - before
    print(f"server RSS growth over the thin-image cases: {growth / 2**20:.1f} MiB")
    assert growth < GROWTH_BOUND, f"server RSS grew by {growth / 2**20:.0f} MB"
    rh.assert_recovers(host)
