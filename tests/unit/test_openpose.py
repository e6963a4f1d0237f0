"""OpenPose body network, keypoint decoding and POSE_KEYPOINT parsing (docs/preprocessing.md, "Pose").

The network is a ComfyUI model (models/openpose_body.py): loaded, unloaded and reloaded by its model management."""

from __future__ import annotations

import builtins
import os

import fixtures_openpose
import numpy as np
import pytest
import safetensors.torch
import torch
from pickle_inspect import file_pickle_globals


@pytest.fixture(scope="module")
def body(pack):
    """The pure part: input preparation and decoding."""
    from comfyui_tryon.preprocess import openpose_body

    return openpose_body


@pytest.fixture(scope="module")
def network(pack):
    """The network and its loading."""
    from comfyui_tryon.models import openpose_body

    return openpose_body


@pytest.fixture(scope="module")
def pose_json(pack):
    from comfyui_tryon.preprocess import pose_keypoints

    return pose_keypoints


def input_error():
    from comfyui_tryon.errors import TryOnInputError

    return TryOnInputError


# a standing person facing the camera (COCO-18 order, pixel x, y), drawn at an x offset
PERSON = np.array(
    [
        (100, 40),
        (100, 70),
        (75, 72),
        (65, 110),
        (60, 145),
        (125, 72),
        (135, 110),
        (140, 145),
        (85, 160),
        (85, 210),
        (85, 260),
        (115, 160),
        (115, 210),
        (115, 260),
        (94, 34),
        (106, 34),
        (88, 38),
        (112, 38),
    ],
    dtype=np.float32,
)
HEIGHT, WIDTH = 300, 420


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------
def openpose_entries() -> list[tuple]:
    from comfyui_tryon.models import managed_models

    return [key for key in managed_models.loaded_entries() if key[0] == "openpose"]


def test_real_shaped_random_state_dict_loads_strict_and_outputs_38_pafs_and_19_heatmaps_at_one_eighth(network):
    shapes = fixtures_openpose.reference_shapes()
    assert len(shapes) == 184
    params = sum(int(np.prod(s)) for _, s in shapes)
    assert abs(params - 52.3e6) < 0.05e6
    state = fixtures_openpose.random_state_dict(shapes, seed=1)
    net = network.body_pose_net_from_state_dict(state, "pose_model")
    assert sum(p.numel() for p in net.parameters()) == params
    assert list(net.state_dict()) == [k for k, _ in shapes]  # flat names, the real order
    pafs, heatmaps = net(torch.zeros(1, 3, 64, 48))
    assert pafs.shape == (1, 38, 8, 6) and heatmaps.shape == (1, 19, 8, 6)
    assert net.Mconv1_stage2_L1.in_channels == 185


def test_tiny_fixture_file_loads_as_a_comfyui_model_with_real_key_names(network, tmp_path):
    import comfy.model_management

    fixtures_openpose.write(tmp_path)
    path = tmp_path / "openpose" / fixtures_openpose.FIXTURE_NAME
    assert path.stat().st_size < 5_000_000
    raw = torch.load(path, weights_only=True)
    assert list(raw) == [k for k, _ in fixtures_openpose.reference_shapes()]
    patcher = network.load_body_pose_model(str(path), "pose_model")
    for _ in range(3):  # loading a loaded model again keeps it (ComfyUI detaches and re-attaches it each time)
        assert network.load_body_pose_model(str(path), "pose_model") is patcher
    assert patcher.load_device == comfy.model_management.get_torch_device()
    assert patcher.offload_device == comfy.model_management.unet_offload_device()
    assert any(loaded.model is patcher for loaded in comfy.model_management.current_loaded_models)
    image = np.full((200, 150, 3), 90, np.uint8)
    heatmaps, pafs = network.run_body_network(patcher, image)
    assert heatmaps.shape == (200, 150, 19) and pafs.shape == (200, 150, 38)
    assert np.all(heatmaps[:, :, :18] == 0) and np.abs(pafs).max() > 0  # the fixture's heatmap layer is zero: nobody, on any image
    assert network.detect_body_keypoints(patcher, image) is None


def test_unloading_frees_the_network_and_the_next_use_loads_the_file_again(network, tmp_path):
    import comfy.model_management

    path = tmp_path / "body_pose_model.safetensors"
    safetensors.torch.save_file(fixtures_openpose.random_state_dict(fixtures_openpose.tiny_shapes(), seed=3), str(path))
    image = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    first = network.load_body_pose_model(str(path), "pose_model")
    before = network.run_body_network(first, image)
    assert [key for key in openpose_entries() if key[1] == str(path.resolve())]
    comfy.model_management.unload_all_models()
    assert not [key for key in openpose_entries() if key[1] == str(path.resolve())]
    assert not any(loaded.model is first for loaded in comfy.model_management.current_loaded_models)
    again = network.load_body_pose_model(str(path), "pose_model")
    assert again is not first
    after = network.run_body_network(again, image)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_a_file_replaced_under_the_same_name_is_read_again(network, tmp_path):
    path = tmp_path / "body_pose_model.pth"
    torch.save(fixtures_openpose.random_state_dict(fixtures_openpose.tiny_shapes(), seed=4), path)
    image = np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    old = network.load_body_pose_model(str(path), "pose_model")
    old_maps = network.run_body_network(old, image)[1]
    torch.save(fixtures_openpose.random_state_dict(fixtures_openpose.tiny_shapes(), seed=5), path)  # new content, same name
    new = network.load_body_pose_model(str(path), "pose_model")
    assert new is not old and not np.array_equal(network.run_body_network(new, image)[1], old_maps)
    assert len([key for key in openpose_entries() if key[1] == str(path.resolve())]) == 1  # the old version is dropped


def test_a_partially_loaded_network_still_runs(network, body, tmp_path):
    """With little free VRAM ComfyUI loads only part of a model; the convolutions are ComfyUI's ops, which cast the rest."""
    path = tmp_path / "body_pose_model.safetensors"
    safetensors.torch.save_file(fixtures_openpose.random_state_dict(fixtures_openpose.tiny_shapes(), seed=6), str(path))
    image = np.random.default_rng(2).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    batch = torch.from_numpy(body.prepare_input(np.ascontiguousarray(image[:, :, ::-1]))[0])
    patcher = network.load_body_pose_model(str(path), "pose_model")
    with torch.inference_mode():
        expected = patcher.model(batch.to(patcher.load_device))
    patcher.detach()
    patcher.load(patcher.load_device, lowvram_model_memory=1, full_load=False)  # what ComfyUI does with almost no free memory
    assert patcher.model.model_lowvram and patcher.model.conv1_1.comfy_cast_weights
    with torch.inference_mode():
        partial = patcher.model(batch.to(patcher.load_device))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(partial, expected, strict=True))


def test_safetensors_copy_loads(network, tmp_path):
    path = tmp_path / "body.safetensors"
    safetensors.torch.save_file(fixtures_openpose.random_state_dict(fixtures_openpose.tiny_shapes()), str(path))
    patcher = network.load_body_pose_model(str(path), "pose_model")
    assert patcher.model.conv1_1.out_channels == fixtures_openpose.TINY_WIDTHS[64]


class _Armed:
    """Unpickling this creates a file: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_runs(network, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "body_pose_model.pth"
    state = fixtures_openpose.random_state_dict(fixtures_openpose.tiny_shapes())
    state["conv1_1.bias"] = _Armed(str(marker))
    torch.save(state, path)
    with pytest.raises(input_error(), match="pose_model") as error:
        network.load_body_pose_model(str(path), "pose_model")
    for fragment in ("asks to run code", "refused for safety", "nothing in it ran", "safetensors"):
        assert fragment in str(error.value)
    assert not marker.exists()
    assert "io.open" in file_pickle_globals(path)  # the file really is armed: an unsafe load would call open() (io.open)
    assert not [key for key in openpose_entries() if key[1] == str(path.resolve())]


@pytest.mark.parametrize("kind", ["empty", "corrupt", "wrong_keys", "wrong_outputs", "broken_chain", "integers", "nan"])
def test_bad_files_give_a_clear_error_naming_the_input(network, tmp_path, kind):
    path = tmp_path / "body_pose_model.pth"
    tiny = fixtures_openpose.tiny_shapes()
    state = fixtures_openpose.random_state_dict(tiny)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(os.urandom(3000))
    elif kind == "wrong_keys":  # e.g. the hand model
        torch.save({"model1_0.conv1_1.weight": torch.zeros(4, 3, 3, 3)}, path)
    elif kind == "wrong_outputs":
        torch.save(fixtures_openpose.random_state_dict([(k, (20,) + s[1:] if k.startswith("Mconv7_stage6_L2") else s) for k, s in tiny]), path)
    elif kind == "broken_chain":
        torch.save(fixtures_openpose.random_state_dict([(k, (s[0], 5) + s[2:] if k == "conv2_1.weight" else s) for k, s in tiny]), path)
    elif kind == "integers":
        torch.save({k: v.to(torch.int32) for k, v in state.items()}, path)
    elif kind == "nan":
        state["Mconv3_stage4_L1.weight"][0, 0, 0, 0] = float("nan")
        torch.save(state, path)
    fix = {"empty": "Download it again", "corrupt": "Download it again", "integers": "download body_pose_model.pth again", "nan": "NaN"}
    with pytest.raises(input_error(), match="^pose_model: ") as error:
        network.load_body_pose_model(str(path), "pose_model")
    assert fix.get(kind, "body_pose_model.pth") in str(error.value)


def test_input_is_bgr_scaled_to_184_rows_and_padded_with_128_to_a_multiple_of_8(body):
    image_bgr = np.zeros((512, 384, 3), np.uint8)
    image_bgr[:, :, 0] = 255  # blue
    batch, scaled_hw, padded_hw = body.prepare_input(image_bgr)
    assert scaled_hw == (184, 138) and padded_hw == (184, 144) and batch.shape == (1, 3, 184, 144)
    assert np.allclose(batch[0, 0, :, :138], 255 / 256 - 0.5) and np.allclose(batch[0, 2, :, :138], -0.5)
    assert np.all(batch[0, :, :, 138:] == 0.0)  # 128 / 256 - 0.5


def test_upsampled_maps_put_a_network_cell_back_at_its_image_position(body):
    maps = np.zeros((1, 23, 18), np.float32)  # 184 x 144 padded input of a 512 x 384 image, 138 columns real
    maps[0, 10, 7] = 1.0
    up = body.upsample_maps(maps, (184, 138), (512, 384))
    assert up.shape == (512, 384, 1)
    y, x = np.unravel_index(np.argmax(up[:, :, 0]), up.shape[:2])
    scale = 512 / 184
    assert abs(y - (10 * 8 + 3.5) * scale) <= 8 and abs(x - (7 * 8 + 3.5) * scale) <= 8


# ----------------------------------------------------------------------------------------------
# Decoding on synthetic heatmaps and PAFs
# ----------------------------------------------------------------------------------------------
def draw_person(heatmaps: np.ndarray, pafs: np.ndarray, points: np.ndarray, peak: float = 1.0, paf: float = 1.0, skip=()) -> None:
    """Gaussian peaks at the parts and unit PAF vectors (x `paf`) in a 3-px band along every limb."""
    from comfyui_tryon.preprocess.openpose_body import LIMB_PAF_CHANNELS, LIMBS

    ys, xs = np.mgrid[: heatmaps.shape[0], : heatmaps.shape[1]]
    for part, (x, y) in enumerate(points):
        if part not in skip:
            heatmaps[:, :, part] = np.maximum(heatmaps[:, :, part], peak * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.0**2)))
    for (a, b), (cx, cy) in zip(LIMBS, LIMB_PAF_CHANNELS, strict=True):
        start, end = points[a], points[b]
        direction = (end - start) / np.linalg.norm(end - start)
        t = np.clip(((xs - start[0]) * direction[0] + (ys - start[1]) * direction[1]) / np.linalg.norm(end - start), 0, 1)
        dist = np.hypot(xs - (start[0] + t * (end - start)[0]), ys - (start[1] + t * (end - start)[1]))
        band = dist <= 3
        pafs[band, cx] = paf * direction[0]
        pafs[band, cy] = paf * direction[1]


def empty_maps() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((HEIGHT, WIDTH, 19), np.float32), np.zeros((HEIGHT, WIDTH, 38), np.float32)


def test_one_person_decodes_to_the_drawn_keypoints(body):
    heatmaps, pafs = empty_maps()
    draw_person(heatmaps, pafs, PERSON)
    points = body.decode_keypoints(heatmaps, pafs)
    assert points.shape == (18, 2) and points.dtype == np.float32
    assert np.abs(points - PERSON).max() <= 1.0


def test_a_missing_part_is_zero_and_the_rest_is_kept(body):
    heatmaps, pafs = empty_maps()
    draw_person(heatmaps, pafs, PERSON, skip=(7, 17))  # left wrist, left ear
    points = body.decode_keypoints(heatmaps, pafs)
    assert (points[7] == 0).all() and (points[17] == 0).all()
    keep = [i for i in range(18) if i not in (7, 17)]
    assert np.abs(points[keep] - PERSON[keep]).max() <= 1.0


def test_two_people_give_the_most_confident_one_first(body):
    heatmaps, pafs = empty_maps()
    other = PERSON + np.array([220, 10], np.float32)
    draw_person(heatmaps, pafs, other, peak=0.6, paf=0.5)
    draw_person(heatmaps, pafs, PERSON)
    people = body.decode_people(heatmaps, pafs)
    assert len(people) == 2
    assert np.abs(people[0][:, :2] - PERSON).max() <= 1.0 and np.abs(people[1][:, :2] - other).max() <= 1.0
    assert np.abs(body.decode_keypoints(heatmaps, pafs) - PERSON).max() <= 1.0
    # swapped strengths: the other person comes first
    heatmaps, pafs = empty_maps()
    draw_person(heatmaps, pafs, PERSON, peak=0.6, paf=0.5)
    draw_person(heatmaps, pafs, other)
    assert np.abs(body.decode_keypoints(heatmaps, pafs) - other).max() <= 1.0


def test_pafs_pointing_the_wrong_way_connect_nothing(body):
    heatmaps, pafs = empty_maps()
    draw_person(heatmaps, pafs, PERSON, paf=-1.0)
    assert body.decode_keypoints(heatmaps, pafs) is None


def test_a_limb_needs_more_than_80_percent_of_its_paf_samples_above_005(body):
    heatmaps, pafs = empty_maps()
    draw_person(heatmaps, pafs, PERSON, paf=0.04)  # aligned, but every sample is below the 0.05 threshold
    assert body.decode_keypoints(heatmaps, pafs) is None
    heatmaps, pafs = empty_maps()
    draw_person(heatmaps, pafs, PERSON)
    pafs[:, :, 10:12] = 0  # l-knee -> l-ankle (channels 10, 11) gone: the left ankle is lost, the rest stays
    start, end = PERSON[12], PERSON[13]
    for t in np.linspace(0, 1, 10)[:8]:  # 8 of 10 samples supported: not more than 80 %
        x, y = np.round(start + t * (end - start)).astype(int)
        pafs[y, x, 10:12] = (end - start) / np.linalg.norm(end - start)
    points = body.decode_keypoints(heatmaps, pafs)
    assert (points[13] == 0).all() and np.abs(points[:13] - PERSON[:13]).max() <= 1.0
    for t in np.linspace(0, 1, 10)[8:]:  # all 10 samples supported: connected
        x, y = np.round(start + t * (end - start)).astype(int)
        pafs[y, x, 10:12] = (end - start) / np.linalg.norm(end - start)
    assert np.abs(body.decode_keypoints(heatmaps, pafs) - PERSON).max() <= 1.0


def test_no_peaks_means_no_person(body):
    heatmaps, pafs = empty_maps()
    heatmaps[:, :, :18] = 0.05  # flat and below the 0.1 threshold
    assert body.decode_keypoints(heatmaps, pafs) is None
    assert body.find_peaks(heatmaps) == [] or all(len(p) == 0 for p in body.find_peaks(heatmaps))


def test_peaks_beat_their_neighbours_after_smoothing_and_keep_the_raw_score(body):
    heatmaps, _ = empty_maps()
    heatmaps[50, 60, 3] = 30.0  # one hot pixel: smoothed it is still a single peak
    heatmaps[:, :, 4] = 0.09
    peaks = body.find_peaks(heatmaps)
    assert len(peaks[3]) == 1 and tuple(peaks[3][0][:3]) == (60, 50, 30.0)
    assert sum(len(p) for p in peaks) == 1


# ----------------------------------------------------------------------------------------------
# POSE_KEYPOINT (comfyui_controlnet_aux OpenPose JSON)
# ----------------------------------------------------------------------------------------------
def controlnet_aux_frame(points: np.ndarray, canvas=(420, 300), missing=(), confidence=1.0, normalise=False) -> dict:
    flat = []
    for i, (x, y) in enumerate(points):
        if i in missing:
            flat += [0.0, 0.0, 0.0]
        else:
            flat += [float(x) / (canvas[0] if normalise else 1), float(y) / (canvas[1] if normalise else 1), confidence]
    return {
        "people": [{"pose_keypoints_2d": flat, "face_keypoints_2d": None, "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}],
        "canvas_width": canvas[0],
        "canvas_height": canvas[1],
    }


def test_pixel_coordinates_scale_from_the_canvas_to_the_image(pose_json):
    pose = [controlnet_aux_frame(PERSON, missing=(4,))]
    points = pose_json.keypoints_from_pose_json(pose, 0, 840, 600)
    assert points.dtype == np.float32 and points.shape == (18, 2)
    expected = PERSON * 2
    expected[4] = 0
    assert np.allclose(points, expected)


def test_normalised_coordinates_are_detected_and_scaled_to_the_image(pose_json):
    pose = [controlnet_aux_frame(PERSON, normalise=True, missing=(7,))]
    points = pose_json.keypoints_from_pose_json(pose, 0, 384, 512)
    expected = PERSON / np.array([420, 300]) * np.array([384, 512])
    expected[7] = 0
    assert np.allclose(points, expected, atol=1e-3)


def test_the_most_confident_person_of_the_right_image_is_taken(pose_json):
    weak = controlnet_aux_frame(PERSON + 200, confidence=0.3)
    strong = controlnet_aux_frame(PERSON, confidence=0.9)
    frame = {"people": weak["people"] + strong["people"], "canvas_width": 420, "canvas_height": 300}
    batch = [controlnet_aux_frame(PERSON + 50), frame]
    assert np.allclose(pose_json.keypoints_from_pose_json(batch, 1, 420, 300), PERSON)
    assert np.allclose(pose_json.keypoints_from_pose_json(batch, 0, 420, 300), PERSON + 50)
    assert np.allclose(pose_json.keypoints_from_pose_json(frame, 3, 420, 300), PERSON)  # a bare dict serves every image
    assert np.allclose(pose_json.keypoints_from_pose_json([frame], 3, 420, 300), PERSON)  # so does a single pose


def test_no_people_gives_none(pose_json):
    assert pose_json.keypoints_from_pose_json([{"people": [], "canvas_width": 10, "canvas_height": 10}], 0, 10, 10) is None
    assert pose_json.keypoints_from_pose_json([controlnet_aux_frame(PERSON, confidence=0.0)], 0, 10, 10) is None


def test_round_trip_through_the_json_format(pose_json):
    points = PERSON.copy()
    points[5] = 0
    frames = pose_json.pose_json_from_keypoints([points, None], 420, 300)
    assert frames[1]["people"] == [] and frames[0]["canvas_width"] == 420
    assert frames[0]["people"][0]["pose_keypoints_2d"][5 * 3 : 5 * 3 + 3] == [0.0, 0.0, 0.0]
    assert np.allclose(pose_json.keypoints_from_pose_json(frames, 0, 420, 300), points)


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("not json", "JSON"),
        (42, "list"),
        ([], "empty"),
        ([{"people": []}, {"people": []}], "2 poses"),
        ([{"people": "x"}], "'people'"),
        ([{"people": [{"pose_keypoints_2d": [1.0, 2.0]}]}], "54"),
        ([{"people": [{"pose_keypoints_2d": ["a"] * 54}]}], "numbers"),
        ([{"people": [{"pose_keypoints_2d": [float("nan")] * 54}]}], "NaN"),
        ([{"people": [], "canvas_width": 0, "canvas_height": 10}], "positive"),
        ([5], "not a dict"),
    ],
)
def test_malformed_pose_keypoint_gives_a_clear_error(pose_json, bad, needle):
    with pytest.raises(input_error(), match="^pose_keypoint: ") as error:
        pose_json.keypoints_from_pose_json(bad, 2, 100, 100)
    assert needle in str(error.value)
