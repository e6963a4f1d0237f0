"""SCHP human parsing (docs/preprocessing.md, "Human parsing"), with tiny ONNX nets of the real I/O layout.

The tiny nets (tests/support/fixtures_parsing.py) parse each colour of a painted scene to a known label, read BGR input
and put the right answer only in their second output, so exact labels prove the channel order, the normalisation and
the output choice; the upsampling and inverse warp decide where the label edges land. The sessions are ComfyUI
models: loaded, unloaded and reloaded by its model management.
"""

from __future__ import annotations

import io
import pathlib
import shutil

import cv2
import fixtures_parsing as scene
import numpy as np
import onnxruntime
import pytest
import torch


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("parsing_models")
    scene.write(root)
    return root / "humanparsing"


@pytest.fixture(scope="module")
def parsing(pack):
    from comfyui_tryon.models import human_parsing

    return human_parsing


@pytest.fixture(scope="module")
def atr(parsing, models):
    return parsing.load_parsing_model(str(models / "parsing_atr.onnx"), "atr_model")


@pytest.fixture(scope="module")
def lip(parsing, models):
    return parsing.load_parsing_model(str(models / "parsing_lip.onnx"), "lip_model")


def interior(labels: np.ndarray, margin: int = 5) -> np.ndarray:
    """Pixels at least `margin` pixels away from any label edge (the edges move with the network's stride)."""
    edges = np.zeros(labels.shape, np.uint8)
    edges[:-1] |= labels[:-1] != labels[1:]
    edges[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return cv2.distanceTransform(1 - edges, cv2.DIST_L2, 3) >= margin


def parsing_entries() -> list[tuple]:
    from comfyui_tryon.models import managed_models

    return [key for key in managed_models.loaded_entries() if key[0] == "parsing"]


# ----------------------------------------------------------------------------------------------
# Loading, through ComfyUI's model management
# ----------------------------------------------------------------------------------------------
def test_fixture_models_have_the_real_input_name_sizes_and_output_structure(models):
    for kind, size, classes, low in (("atr", 512, 18, 128), ("lip", 473, 20, 119)):
        session = onnxruntime.InferenceSession(str(models / f"parsing_{kind}.onnx"), providers=["CPUExecutionProvider"])
        (graph_input,) = session.get_inputs()
        assert (graph_input.name, graph_input.shape) == ("input.1", [1, 3, size, size])
        assert [o.shape for o in session.get_outputs()] == [[1, classes, low, low], [1, classes, low, low], [1, 2, low, low]]


def test_loading_reads_the_square_size_and_classes_from_the_graph(atr, lip):
    assert (atr.size, atr.num_classes, atr.onnx_input, atr.node_input) == (512, 18, "input.1", "atr_model")
    assert (lip.size, lip.num_classes) == (473, 20)


def test_a_session_is_a_comfyui_model_of_the_file_size_on_comfyuis_devices(atr, models):
    import comfy.model_management

    patcher = atr.patcher
    assert patcher.model_size() == (models / "parsing_atr.onnx").stat().st_size
    assert patcher.load_device == comfy.model_management.get_torch_device()
    assert patcher.offload_device == comfy.model_management.unet_offload_device()
    assert any(loaded.model is patcher for loaded in comfy.model_management.current_loaded_models)


def test_the_same_file_gives_the_same_model_whichever_input_chose_it(parsing, models, atr):
    for _ in range(3):  # loading a loaded model again keeps it (ComfyUI detaches and re-attaches it each time)
        again = parsing.load_parsing_model(str(models / "parsing_atr.onnx"), "another_input")
        assert again.patcher is atr.patcher and again.node_input == "another_input" and again.patcher.model.session is not None


def test_unloading_closes_the_session_and_the_next_use_opens_the_file_again(parsing, models):
    import comfy.model_management

    image = scene.paint(scene.scene_labels(96, 128))
    first = parsing.load_parsing_model(str(models / "parsing_atr.onnx"), "atr_model")
    before = parsing.parse_image(first, image)
    assert parsing_entries()
    comfy.model_management.unload_all_models()
    assert first.patcher.model.session is None and parsing_entries() == []
    again = parsing.load_parsing_model(str(models / "parsing_atr.onnx"), "atr_model")
    assert again.patcher is not first.patcher and again.patcher.model.session is not None
    assert np.array_equal(parsing.parse_image(again, image), before)


def test_a_model_unloaded_while_still_held_opens_again_when_used(parsing, models):
    import comfy.model_management

    held = parsing.load_parsing_model(str(models / "parsing_lip.onnx"), "lip_model")
    image = scene.paint(scene.scene_labels(96, 128))
    before = parsing.parse_image(held, image)
    comfy.model_management.unload_all_models()
    assert held.patcher.model.session is None
    assert np.array_equal(parsing.parse_image(held, image), before)  # ComfyUI loads it again first


def test_a_file_replaced_under_the_same_name_is_read_again(parsing, models, tmp_path):
    path = tmp_path / "parsing_model.onnx"
    shutil.copy(models / "parsing_atr.onnx", path)
    old = parsing.load_parsing_model(str(path), "atr_model")
    assert old.size == 512
    shutil.copy(models / "parsing_lip.onnx", path)  # new content, same name
    new = parsing.load_parsing_model(str(path), "atr_model")
    assert new.patcher is not old.patcher and (new.size, new.num_classes) == (473, 20)
    assert len([key for key in parsing_entries() if key[1] == str(path.resolve())]) == 1  # the old version is dropped


def test_the_cuda_provider_is_chosen_on_a_gpu_when_onnxruntime_offers_it(parsing, monkeypatch):
    assert parsing.session_providers(torch.device("cpu"), "atr_model") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert parsing.session_providers(torch.device("cuda", 1), "atr_model") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert parsing.session_providers(torch.device("cuda", 1), "atr_model") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]


# ----------------------------------------------------------------------------------------------
# Pre- and post-processing
# ----------------------------------------------------------------------------------------------
def test_square_warp_keeps_the_aspect_and_centres_the_image(pack):
    from comfyui_tryon.preprocess.human_parsing import square_warp

    warp = square_warp(384, 512, 512)  # portrait: height spans the square, width centred
    assert np.allclose(warp @ [0, 0, 1], [64, 0]) and np.allclose(warp @ [383, 511, 1], [447, 511])
    warp = square_warp(600, 400, 473)  # landscape: box width 599 onto 472
    assert np.allclose(warp @ [299.5, 199.5, 1], [236, 236])
    assert np.allclose(warp @ [0, 0, 1], [0, 236 - 199.5 * 472 / 599]) and np.isclose((warp @ [599, 0, 1])[0], 472)


@pytest.mark.parametrize("size", [(384, 512), (256, 192), (600, 400)], ids=["portrait", "small", "landscape"])
def test_atr_parses_each_painted_colour_to_its_label_at_the_image_size(parsing, atr, size):
    labels = scene.scene_labels(*size)
    parsed = parsing.parse_image(atr, scene.paint(labels))
    expected = np.where(labels == scene.NECK_MARK, 11, labels)  # ATR calls the neck face
    assert parsed.shape == labels.shape and parsed.dtype == np.uint8
    inner = interior(expected)
    assert (parsed[inner] == expected[inner]).all()
    # the label edges stay within the network's stride of where they were painted
    assert (parsed != expected).mean() < 0.03


def test_channel_order_is_bgr_and_only_the_second_output_is_used(parsing, atr):
    red = np.zeros((64, 48, 3), np.uint8)
    red[:] = scene.COLOURS[4]  # RGB red = upper clothes; read as RGB it would be blue = pants
    assert (parsing.parse_image(atr, red) == 4).all()  # the first output would say 5 (off by one class)


def test_float_images_in_0_1_parse_like_uint8(parsing, atr):
    image = scene.paint(scene.scene_labels(192, 256))
    assert np.array_equal(parsing.parse_image(atr, image.astype(np.float32) / 255.0), parsing.parse_image(atr, image))


def test_fused_logits_are_upsampled_with_align_corners_and_warped_back(parsing, atr):
    # upper clothes left of x = 400, pants from there, at 512x512 (the warp is the identity). The tiny net samples
    # every 4th pixel: logit columns 0..99 say clothes, 100..127 pants. With align_corners, pixel j reads column
    # j * 127 / 511, so pants win from j = 401 (column 99.5 at j = 400.35); without it they would from j = 400.
    image = np.zeros((512, 512, 3), np.uint8)
    image[:, :400] = scene.COLOURS[4]
    image[:, 400:] = scene.COLOURS[6]
    parsed = parsing.parse_image(atr, image)
    assert (parsed[:, :401] == 4).all() and (parsed[:, 401:] == 6).all()


def test_parse_person_adds_the_neck_from_lip(parsing, atr, lip):
    labels = scene.scene_labels()
    parsed = parsing.parse_person(atr, lip, scene.paint(labels))
    expected = scene.expected_person_labels(labels)
    inner = interior(expected)
    assert (parsed[inner] == expected[inner]).all()
    assert (parsed[labels == scene.NECK_MARK] == 18).mean() > 0.8 and 18 not in parsed[interior(labels) & (labels == 11)]


def test_without_lip_there_is_no_neck_label(parsing, atr):
    labels = scene.scene_labels()
    parsed = parsing.parse_person(atr, None, scene.paint(labels))
    assert 18 not in parsed
    assert (parsed[interior(labels) & (labels == scene.NECK_MARK)] == 11).all()


def test_small_holes_in_upper_clothes_and_arms_are_filled_large_ones_kept(pack):
    from comfyui_tryon.preprocess.human_parsing import fill_clothes_holes

    labels = np.zeros((512, 384), np.uint8)
    labels[100:400, 80:300] = 4  # upper clothes
    labels[100:400, 300:330] = 14  # left arm beside it
    labels[150:190, 120:160] = 16  # a 40x40 bag inside: hole of outline area 39*39 < 2000 -> clothes
    labels[250:310, 120:180] = 2  # a 60x60 hole: outline area 59*59 > 2000 -> keeps its label
    labels[200:220, 290:310] = 0  # a hole between clothes and arm -> clothes
    filled = fill_clothes_holes(labels)
    assert (filled[150:190, 120:160] == 4).all()
    assert (filled[250:310, 120:180] == 2).all()
    assert (filled[200:220, 290:300] == 4).all() and (filled[200:220, 300:310] == 4).all()
    assert (filled[100:400, 310:330] == 14).all() and (filled == 0).sum() == (labels == 0).sum() - 400


def test_the_hole_threshold_scales_with_the_image_area(pack):
    from comfyui_tryon.preprocess.human_parsing import fill_clothes_holes

    labels = np.zeros((1024, 768), np.uint8)
    labels[200:800, 160:600] = 4
    labels[500:560, 240:300] = 2  # 60x60 at 768x1024 is 30x30 at 384x512: filled
    labels[300:400, 240:340] = 2  # 100x100 at 768x1024 = 50x50 at 384x512: kept
    filled = fill_clothes_holes(labels)
    assert (filled[500:560, 240:300] == 4).all() and (filled[300:400, 240:340] == 2).all()


def test_hole_fill_clears_the_image_border_like_the_original(pack):
    from comfyui_tryon.preprocess.mask_ops import fill_holes

    ring = np.zeros((20, 30), bool)
    ring[5:15, 5:25] = True
    ring[8:12, 10:20] = False  # an enclosed hole: filled
    ring[0, :] = True  # on the border: cleared
    filled = fill_holes(ring)
    assert filled[5:15, 5:25].all() and not filled[0].any() and filled.sum() == 10 * 20


# ----------------------------------------------------------------------------------------------
# Bad files
# ----------------------------------------------------------------------------------------------
def test_a_corrupt_file_names_the_input(pack, parsing, tmp_path):
    from comfyui_tryon.errors import TryOnInputError

    broken = tmp_path / "parsing_atr.onnx"
    broken.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(TryOnInputError, match="atr_model: parsing_atr.onnx is not a readable ONNX model"):
        parsing.load_parsing_model(str(broken), "atr_model")
    assert not [key for key in parsing_entries() if key[1] == str(broken.resolve())]


def test_an_onnx_model_of_another_shape_is_refused(pack, parsing, tmp_path):
    from comfyui_tryon.errors import TryOnInputError

    buffer = io.BytesIO()
    torch.onnx.export(torch.nn.Conv2d(3, 4, 1), (torch.zeros(1, 3, 64, 32),), buffer, input_names=["input.1"], dynamo=False)
    other = tmp_path / "other.onnx"
    other.write_bytes(buffer.getvalue())
    with pytest.raises(TryOnInputError, match=r"lip_model: other.onnx is not a SCHP parsing model \(expected one input"):
        parsing.load_parsing_model(str(other), "lip_model")


def test_lip_chosen_as_atr_is_refused_by_its_label_count(pack, parsing, models, atr):
    from comfyui_tryon.errors import TryOnInputError

    image = scene.paint(scene.scene_labels(96, 128))
    wrong_atr = parsing.load_parsing_model(str(models / "parsing_lip.onnx"), "atr_model")
    with pytest.raises(TryOnInputError, match="atr_model: parsing_lip.onnx has 20 labels, the ATR model has 18"):
        parsing.parse_person(wrong_atr, None, image)
    wrong_lip = parsing.load_parsing_model(str(models / "parsing_atr.onnx"), "lip_model")
    with pytest.raises(TryOnInputError, match="lip_model: parsing_atr.onnx has 18 labels, the LIP model has 20"):
        parsing.parse_person(atr, wrong_lip, image)
