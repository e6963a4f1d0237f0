"""Reliability matrix, images and masks into 'IDM-VTON Apply', through a real ComfyUI server.

Sizes, aspect ratios, channels, NaN/Inf, batches and masks. A case either succeeds with an image of the
documented size, or fails with a message naming the node input and the fix; the server stays alive and
the next valid prompt succeeds.
"""

from __future__ import annotations

import numpy as np
import pytest
import reliability_host as rh
import torch

W, H = rh.WIDTH, rh.HEIGHT


def image_file(kind: str, width: int, height: int) -> dict:
    return rh.load_image(f"r_{kind}_{width}x{height}.png")


def with_alpha(node_id: str) -> dict:
    return {"class_type": "JoinImageWithAlpha", "inputs": {"image": [node_id, 0], "alpha": ["mask", 0]}}


def repeated(node_id: str, amount: int) -> dict:
    return {"class_type": "RepeatImageBatch", "inputs": {"image": [node_id, 0], "amount": amount}}


def solid_mask(value: float) -> dict:
    return {"class_type": "SolidMask", "inputs": {"value": value, "width": W, "height": H}}


def rect_mask(batch: int = 1) -> torch.Tensor:
    mask = torch.zeros(batch, H, W)
    mask[:, H // 4 : H * 3 // 4, W // 4 : W * 3 // 4] = 1
    return mask


def with_tensor(host, node_id: str, tensor: torch.Tensor, **extra) -> dict:
    """The base graph with `node_id` replaced by a tensor node (IMAGE or MASK by the tensor's rank)."""
    name = rh.write_tensor(host, f"{node_id}_{abs(hash(tensor.numpy().tobytes()))}.safetensors", tensor)
    node = rh.tensor_mask(name) if tensor.ndim == 3 else rh.tensor_image(name)
    return rh.graph(**{node_id: node}, **extra)


def with_nan(tensor: torch.Tensor, value: float = float("nan")) -> torch.Tensor:
    tensor = tensor.clone()
    tensor.view(-1)[tensor.numel() // 2] = value
    return tensor


def rgb(batch: int = 1, channels: int = 3) -> torch.Tensor:
    return torch.rand(batch, H, W, channels, generator=torch.Generator().manual_seed(batch * 10 + channels))


def rewire(graph: dict, input_name: str, node_id: str, node: dict) -> dict:
    graph[node_id] = node
    graph["apply"]["inputs"][input_name] = [node_id, 0]
    return graph


# case id -> (graph builder, expected output shapes (height, width) per image)
SUCCEEDS = {
    "four-different-sizes": (
        lambda host: rh.graph(
            mask_image=image_file("mask", W // 2, H // 2), densepose=image_file("densepose", 2 * W, 2 * H), garment=image_file("garment", 80, 100)
        ),
        [(H, W)],
    ),
    "person-size-not-divisible-by-8": (lambda host: rh.graph(person=image_file("person", 70, 90)), [(88, 64)]),
    "tall-1-to-6": (lambda host: rh.graph(person=image_file("person", 64, 384)), [(384, 64)]),
    "wide-6-to-1": (lambda host: rh.graph(person=image_file("person", 384, 64)), [(64, 384)]),
    "tiny-garment-mask-and-densepose-16x16": (
        lambda host: rh.graph(garment=image_file("garment", 16, 16), mask_image=image_file("mask", 16, 16), densepose=image_file("densepose", 16, 16)),
        [(H, W)],
    ),
    "grayscale-1-channel-person-rgba-garment-and-densepose": (
        lambda host: rewire(
            rewire(with_tensor(host, "person", rgb(1, 1)), "garment_image", "garment_rgba", with_alpha("garment")),
            "densepose_image",
            "densepose_rgba",
            with_alpha("densepose"),
        ),
        [(H, W)],
    ),
    "full-mask": (lambda host: rh.graph(mask=solid_mask(1.0)), [(H, W)]),
    "two-persons-one-garment": (lambda host: rewire(rh.graph(), "person_image", "persons", repeated("person", 2)), [(H, W), (H, W)]),
}

# masks that binarise to the base mask: the output equals the base run's, pixel for pixel
SAME_AS_BASE = {
    "mask-at-twice-the-size": lambda host: rh.graph(seed=77, mask_image=image_file("mask", 2 * W, 2 * H)),
    "soft-non-binary-mask": lambda host: rh.graph(seed=77, mask_image=rh.load_image("r_soft_mask.png")),
}

TOO_SMALL = ("person_image", "too small", "at least 64px", "Upscale")
NOT_FINITE = ("NaN or Inf", "Check the node that produced it")
FAILS = {
    "tiny-person-16x16": (lambda host: rh.graph(person=image_file("person", 16, 16)), TOO_SMALL),
    "thin-person-40x400": (lambda host: rh.graph(person=image_file("person", 40, 400)), TOO_SMALL),
    "huge-person-4104x64": (
        lambda host: rh.graph(person=image_file("person", 4104, 64)),
        ("person_image", "4104x64 exceeds the 4096px limit", "Downscale or crop the person"),
    ),
    "huge-garment-4104x64": (
        lambda host: rh.graph(garment=image_file("garment", 4104, 64)),
        ("garment_image", "4104x64 exceeds the 4096px limit", "Downscale or crop it"),
    ),
    "nan-in-person": (lambda host: with_tensor(host, "person", with_nan(rgb())), ("person_image", *NOT_FINITE)),
    "inf-in-garment": (lambda host: with_tensor(host, "garment", with_nan(rgb(), float("inf"))), ("garment_image", *NOT_FINITE)),
    "nan-in-densepose": (lambda host: with_tensor(host, "densepose", with_nan(rgb())), ("densepose_image", *NOT_FINITE)),
    "nan-in-mask": (lambda host: with_tensor(host, "mask", with_nan(rect_mask())), ("mask", *NOT_FINITE)),
    "batch-2-persons-3-garments": (
        lambda host: rewire(rewire(rh.graph(), "person_image", "persons", repeated("person", 2)), "garment_image", "garments", repeated("garment", 3)),
        ("batch sizes do not match", "person_image=2", "garment_image=3", "batch 1 or 3"),
    ),
    "batch-2-persons-3-masks": (
        lambda host: with_tensor(host, "mask", rect_mask(3), persons=repeated("person", 2)),
        ("batch sizes do not match", "person_image=2", "mask=3", "batch 1 or 3"),
    ),
    "empty-mask": (lambda host: rh.graph(mask=solid_mask(0.0)), ("mask: the mask is empty", "nothing would be repainted", "Draw or generate a mask")),
    "one-empty-mask-in-a-batch": (
        lambda host: with_tensor(host, "mask", torch.cat([rect_mask(), torch.zeros(1, H, W)]), persons=repeated("person", 2)),
        ("mask: mask 2 of the batch of 2 is empty", "Draw or generate a mask"),
    ),
}


def persons_wired(graph: dict) -> dict:
    if "persons" in graph:
        graph["apply"]["inputs"]["person_image"] = ["persons", 0]
    return graph


@pytest.mark.parametrize("case", list(SUCCEEDS))
def test_an_unusual_input_that_is_fine_succeeds(host, case):
    build, shapes = SUCCEEDS[case]
    status, message, entry = rh.outcome(host, persons_wired(build(host)))
    assert status == "success", message
    assert [image.shape for image in rh.images(host, entry)] == [(h, w, 3) for h, w in shapes]
    assert host.alive()


@pytest.fixture(scope="module")
def base_image(host) -> np.ndarray:
    status, message, entry = rh.outcome(host, rh.graph(seed=77))
    assert status == "success", message
    (image,) = rh.images(host, entry)
    return image


@pytest.mark.parametrize("case", list(SAME_AS_BASE))
def test_a_mask_that_binarises_to_the_base_mask_gives_the_base_result(host, base_image, case):
    status, message, entry = rh.outcome(host, SAME_AS_BASE[case](host))
    assert status == "success", message
    (image,) = rh.images(host, entry)
    assert np.abs(image.astype(int) - base_image.astype(int)).max() <= 1


@pytest.mark.parametrize("case", list(FAILS))
def test_a_bad_input_fails_with_a_clear_message_and_the_server_recovers(host, case):
    build, fragments = FAILS[case]
    status, message, _ = rh.outcome(host, persons_wired(build(host)))
    assert status == "error", (status, message)
    assert message.startswith("IDMVTONApply:") and "TryOnInputError" in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    rh.assert_recovers(host)
