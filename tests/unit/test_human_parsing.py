"""SCHP human parsing through onnxruntime (DESIGN.md §4.1 "Human parsing"), with tiny ONNX nets of the real I/O layout.

The tiny nets (tests/fixtures_parsing.py) parse each colour of a painted scene to a known label, read BGR input and
put the right answer only in their second output, so exact labels prove the channel order, the normalisation and
the output choice; the upsampling and inverse warp decide where the label edges land.
"""

from __future__ import annotations

import os
import pathlib

import comfy_host
import cv2
import fixtures_parsing as scene
import numpy as np
import onnxruntime
import pytest

hp = comfy_host.pack_module("preprocess.human_parsing")
TryOnInputError = comfy_host.pack_module("models.errors").TryOnInputError


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("parsing_models")
    scene.write(root)
    return root / "humanparsing"


@pytest.fixture(scope="module")
def atr(models):
    return hp.load_parsing_model(str(models / "parsing_atr.onnx"), "atr_model")


@pytest.fixture(scope="module")
def lip(models):
    return hp.load_parsing_model(str(models / "parsing_lip.onnx"), "lip_model")


def interior(labels: np.ndarray, margin: int = 5) -> np.ndarray:
    """Pixels at least `margin` pixels away from any label edge (the edges move with the network's stride)."""
    edges = np.zeros(labels.shape, np.uint8)
    edges[:-1] |= labels[:-1] != labels[1:]
    edges[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return cv2.distanceTransform(1 - edges, cv2.DIST_L2, 3) >= margin


def test_fixture_models_have_the_real_input_name_sizes_and_output_structure(models):
    for kind, size, classes, low in (("atr", 512, 18, 128), ("lip", 473, 20, 119)):
        session = onnxruntime.InferenceSession(str(models / f"parsing_{kind}.onnx"), providers=["CPUExecutionProvider"])
        (graph_input,) = session.get_inputs()
        assert (graph_input.name, graph_input.shape) == ("input.1", [1, 3, size, size])
        assert [o.shape for o in session.get_outputs()] == [[1, classes, low, low], [1, classes, low, low], [1, 2, low, low]]


def test_loading_reads_the_square_size_and_classes_from_the_graph(atr, lip):
    assert (atr.size, atr.num_classes, atr.onnx_input, atr.node_input) == (512, 18, "input.1", "atr_model")
    assert (lip.size, lip.num_classes) == (473, 20)


def test_sessions_are_cached_per_file_until_it_changes(models, atr):
    again = hp.load_parsing_model(str(models / "parsing_atr.onnx"), "another_input")
    assert again.session is atr.session and again.node_input == "another_input"
    copy = models / "copy_atr.onnx"
    copy.write_bytes((models / "parsing_atr.onnx").read_bytes())
    first = hp.load_parsing_model(str(copy), "atr_model").session
    os.utime(copy, (1, 1))
    assert hp.load_parsing_model(str(copy), "atr_model").session is not first


def test_square_warp_keeps_the_aspect_and_centres_the_image():
    warp = hp.square_warp(384, 512, 512)  # portrait: height spans the square, width centred
    assert np.allclose(warp @ [0, 0, 1], [64, 0]) and np.allclose(warp @ [383, 511, 1], [447, 511])
    warp = hp.square_warp(600, 400, 473)  # landscape: box width 599 onto 472
    assert np.allclose(warp @ [299.5, 199.5, 1], [236, 236])
    assert np.allclose(warp @ [0, 0, 1], [0, 236 - 199.5 * 472 / 599]) and np.isclose((warp @ [599, 0, 1])[0], 472)


@pytest.mark.parametrize("size", [(384, 512), (256, 192), (600, 400)], ids=["portrait", "small", "landscape"])
def test_atr_parses_each_painted_colour_to_its_label_at_the_image_size(atr, size):
    labels = scene.scene_labels(*size)
    parsed = hp.parse_image(atr, scene.paint(labels))
    expected = np.where(labels == scene.NECK_MARK, 11, labels)  # ATR calls the neck face
    assert parsed.shape == labels.shape and parsed.dtype == np.uint8
    inner = interior(expected)
    assert (parsed[inner] == expected[inner]).all()
    # the label edges stay within the network's stride of where they were painted
    assert (parsed != expected).mean() < 0.03


def test_channel_order_is_bgr_and_only_the_second_output_is_used(atr):
    red = np.zeros((64, 48, 3), np.uint8)
    red[:] = scene.COLOURS[4]  # RGB red = upper clothes; read as RGB it would be blue = pants
    assert (hp.parse_image(atr, red) == 4).all()  # the first output would say 5 (off by one class)


def test_float_images_in_0_1_parse_like_uint8(atr):
    image = scene.paint(scene.scene_labels(192, 256))
    assert np.array_equal(hp.parse_image(atr, image.astype(np.float32) / 255.0), hp.parse_image(atr, image))


def test_fused_logits_are_upsampled_with_align_corners_and_warped_back(atr):
    # upper clothes left of x = 400, pants from there, at 512x512 (the warp is the identity). The tiny net samples
    # every 4th pixel: logit columns 0..99 say clothes, 100..127 pants. With align_corners, pixel j reads column
    # j * 127 / 511, so pants win from j = 401 (column 99.5 at j = 400.35); without it they would from j = 400.
    image = np.zeros((512, 512, 3), np.uint8)
    image[:, :400] = scene.COLOURS[4]
    image[:, 400:] = scene.COLOURS[6]
    parsed = hp.parse_image(atr, image)
    assert (parsed[:, :401] == 4).all() and (parsed[:, 401:] == 6).all()


def test_parse_person_adds_the_neck_from_lip(atr, lip):
    labels = scene.scene_labels()
    parsed = hp.parse_person(atr, lip, scene.paint(labels))
    expected = scene.expected_person_labels(labels)
    inner = interior(expected)
    assert (parsed[inner] == expected[inner]).all()
    assert (parsed[labels == scene.NECK_MARK] == 18).mean() > 0.8 and 18 not in parsed[interior(labels) & (labels == 11)]


def test_without_lip_there_is_no_neck_label(atr):
    labels = scene.scene_labels()
    parsed = hp.parse_person(atr, None, scene.paint(labels))
    assert 18 not in parsed
    assert (parsed[interior(labels) & (labels == scene.NECK_MARK)] == 11).all()


def test_small_holes_in_upper_clothes_and_arms_are_filled_large_ones_kept():
    labels = np.zeros((512, 384), np.uint8)
    labels[100:400, 80:300] = 4  # upper clothes
    labels[100:400, 300:330] = 14  # left arm beside it
    labels[150:190, 120:160] = 16  # a 40x40 bag inside: hole of outline area 39*39 < 2000 -> clothes
    labels[250:310, 120:180] = 2  # a 60x60 hole: outline area 59*59 > 2000 -> keeps its label
    labels[200:220, 290:310] = 0  # a hole between clothes and arm -> clothes
    filled = hp.fill_clothes_holes(labels)
    assert (filled[150:190, 120:160] == 4).all()
    assert (filled[250:310, 120:180] == 2).all()
    assert (filled[200:220, 290:300] == 4).all() and (filled[200:220, 300:310] == 4).all()
    assert (filled[100:400, 310:330] == 14).all() and (filled == 0).sum() == (labels == 0).sum() - 400


def test_the_hole_threshold_scales_with_the_image_area():
    labels = np.zeros((1024, 768), np.uint8)
    labels[200:800, 160:600] = 4
    labels[500:560, 240:300] = 2  # 60x60 at 768x1024 is 30x30 at 384x512: filled
    labels[300:400, 240:340] = 2  # 100x100 at 768x1024 = 50x50 at 384x512: kept
    filled = hp.fill_clothes_holes(labels)
    assert (filled[500:560, 240:300] == 4).all() and (filled[300:400, 240:340] == 2).all()


def test_a_missing_file_names_the_input(tmp_path):
    with pytest.raises(TryOnInputError, match="atr_model.*does not exist.*models/humanparsing"):
        hp.load_parsing_model(str(tmp_path / "nothing.onnx"), "atr_model")


def test_a_corrupt_file_names_the_input(tmp_path):
    broken = tmp_path / "parsing_atr.onnx"
    broken.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(TryOnInputError, match="atr_model: parsing_atr.onnx is not a readable ONNX model"):
        hp.load_parsing_model(str(broken), "atr_model")


def test_an_onnx_model_of_another_shape_is_refused(tmp_path):
    import io

    import torch

    buffer = io.BytesIO()
    torch.onnx.export(torch.nn.Conv2d(3, 4, 1), (torch.zeros(1, 3, 64, 32),), buffer, input_names=["input.1"], dynamo=False)
    other = tmp_path / "other.onnx"
    other.write_bytes(buffer.getvalue())
    with pytest.raises(TryOnInputError, match=r"lip_model: other.onnx is not a SCHP parsing model \(expected one input"):
        hp.load_parsing_model(str(other), "lip_model")


def test_lip_chosen_as_atr_is_refused_by_its_label_count(models, atr):
    image = scene.paint(scene.scene_labels(96, 128))
    wrong_atr = hp.load_parsing_model(str(models / "parsing_lip.onnx"), "atr_model")
    with pytest.raises(TryOnInputError, match="atr_model: parsing_lip.onnx has 20 labels, the ATR model has 18"):
        hp.parse_person(wrong_atr, None, image)
    wrong_lip = hp.load_parsing_model(str(models / "parsing_atr.onnx"), "lip_model")
    with pytest.raises(TryOnInputError, match="lip_model: parsing_atr.onnx has 18 labels, the LIP model has 20"):
        hp.parse_person(atr, wrong_lip, image)
