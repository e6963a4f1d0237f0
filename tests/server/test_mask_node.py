"""The TryOnAgnosticMask node: in process through the pack, and one workflow through a real ComfyUI server."""

from __future__ import annotations

import io
import os
import shutil

import comfy_host
import fixtures_parsing as scene
import numpy as np
import pytest
import torch
from PIL import Image

TORSO = (slice(150, 290), slice(140, 250))
FACE = (slice(55, 100), slice(170, 215))
RIGHT_HAND = (slice(319, 327), slice(97, 117))  # inside the hand rows, clear of the parsing's edge tolerance
BACKGROUND = (slice(0, 20), slice(0, 60))
NECK = (slice(114, 131), slice(182, 202))


@pytest.fixture(scope="module")
def node(pack):
    return pack.nodes.NODE_CLASS_MAPPINGS["TryOnAgnosticMask"]


@pytest.fixture(scope="module")
def am(pack):
    from comfyui_tryon.preprocess import agnostic_mask

    return agnostic_mask


@pytest.fixture(scope="module")
def pose_json(pack):
    from comfyui_tryon.preprocess import pose_keypoints

    return pose_keypoints


def input_error():
    from comfyui_tryon.errors import TryOnInputError

    return TryOnInputError


@pytest.fixture(scope="module")
def person() -> torch.Tensor:
    return torch.from_numpy(scene.paint(scene.scene_labels())).float()[None] / 255.0


def run(node, image, pose_model="none", category="upper_body", model_type="hd", grow=0, feather=0, lip="parsing_lip.onnx", atr="parsing_atr.onnx", **optional):
    """The node's outputs (mask, preview, parsing), called as ComfyUI calls a V3 node: by input name."""
    inputs = dict(image=image, atr_model=atr, lip_model=lip, pose_model=pose_model, category=category, model_type=model_type, grow=grow, feather=feather)
    return node.execute(**inputs, **optional).result


def test_inputs_list_the_model_folders_and_have_tooltips(pack, node):
    inputs = node.INPUT_TYPES()
    required = inputs["required"]
    assert required["atr_model"][1]["options"][0] == "parsing_atr.onnx" and required["lip_model"][1]["options"][0] == "parsing_lip.onnx"
    assert required["lip_model"][1]["options"][-1] == "none"
    assert required["pose_model"][1]["options"][0] == "none" and "body_pose_model.pth" in required["pose_model"][1]["options"]
    assert required["pose_model"][1]["default"] == "body_pose_model.pth"
    assert all(options.get("tooltip") for _, options in required.values())
    assert list(required) == ["image", "atr_model", "lip_model", "pose_model", "category", "model_type", "grow", "feather"]
    assert list(inputs["optional"]) == ["pose_keypoint", "user_mask", "user_mask_mode"]
    assert inputs["optional"]["pose_keypoint"][0] == "POSE_KEYPOINT"
    assert list(node.RETURN_TYPES) == ["MASK", "IMAGE", "IMAGE"] and list(node.RETURN_NAMES) == ["mask", "preview", "parsing"]
    assert pack.nodes.NODE_DISPLAY_NAME_MAPPINGS["TryOnAgnosticMask"] == "Try-On Agnostic Mask (IDM-VTON)"


def test_a_batch_gets_a_mask_preview_and_parsing_per_image_with_pose_keypoints(node, person, am, pose_json):
    mirrored = person.flip(2)
    keypoints = scene.scene_keypoints()
    flipped = keypoints.copy()
    flipped[:, 0] = 383 - keypoints[:, 0]  # same labels mirrored: each keypoint stays with its arm's colour
    pose = pose_json.pose_json_from_keypoints([keypoints, flipped], 384, 512)
    images = torch.cat([person, mirrored])
    mask, preview, parsing = run(node, images, pose_keypoint=pose)
    assert mask.shape == (2, 512, 384) and preview.shape == parsing.shape == (2, 512, 384, 3)
    for index, image in enumerate((person, mirrored)):
        pixels = (image[0].numpy() * 255).round().astype(np.uint8)
        labels = parse_person(pixels)
        expected = am.agnostic_mask(labels, keypoints if index == 0 else flipped, "hd", "upper_body")
        assert np.array_equal(mask[index].numpy(), expected)
        assert np.array_equal((parsing[index].numpy() * 255).round().astype(np.uint8), am.colourise_labels(labels))
    first = mask[0]
    assert (first[TORSO] == 1).all() and (first[NECK] == 1).all()
    assert (first[FACE] == 0).all() and (first[RIGHT_HAND] == 0).all() and (first[BACKGROUND] == 0).all()
    assert (mask[1].flip(1) != first).float().mean() < 0.01  # the mirrored person gets the mirrored mask
    assert torch.allclose(preview[0][TORSO], torch.tensor(0.5)) and torch.equal(preview[0][FACE], person[0][FACE])
    assert (parsing[0][TORSO] == torch.from_numpy(am.PALETTE[4]).float() / 255).all()


def parse_person(pixels: np.ndarray) -> np.ndarray:
    """The fixture parsing models' labels for one image, outside the node."""
    import folder_paths
    from comfyui_tryon.models import human_parsing

    atr = human_parsing.load_parsing_model(folder_paths.get_full_path("humanparsing", "parsing_atr.onnx"), "atr_model")
    lip = human_parsing.load_parsing_model(folder_paths.get_full_path("humanparsing", "parsing_lip.onnx"), "lip_model")
    return human_parsing.parse_person(atr, lip, pixels)


def test_without_pose_the_arms_come_from_the_parsing_and_the_hands_are_repainted(node, person):
    mask = run(node, person)[0][0]
    assert (mask[RIGHT_HAND] == 1).all() and (mask[TORSO] == 1).all() and (mask[FACE] == 0).all()


def test_without_lip_the_neck_is_kept_as_face(node, person):
    assert (run(node, person, lip="none")[0][0][NECK] == 0).all()
    assert (run(node, person)[0][0][NECK] == 1).all()


def test_lower_body_repaints_the_pants_and_needs_no_pose(node, person, pose_json):
    nobody = pose_json.pose_json_from_keypoints([None], 384, 512)
    mask = run(node, person, category="lower_body", pose_keypoint=nobody)[0][0]
    assert (mask[320:450, 140:240] == 1).all() and (mask[TORSO] == 0).all()


def test_when_openpose_finds_nobody_the_arms_fall_back_to_the_parsing(node, person, am):
    import folder_paths
    from comfyui_tryon.models import openpose_body

    pixels = (person[0].numpy() * 255).round().astype(np.uint8)
    model = openpose_body.load_body_pose_model(folder_paths.get_full_path("openpose", "body_pose_model.pth"), "pose_model")
    assert openpose_body.detect_body_keypoints(model, pixels) is None  # the tiny fixture network finds nobody, by design
    parsing_only = am.agnostic_mask(parse_person(pixels), None, "hd", "upper_body")
    drawn = am.agnostic_mask(parse_person(pixels), scene.scene_keypoints(), "hd", "upper_body")
    assert not np.array_equal(parsing_only, drawn)  # so the comparison below can tell the two paths apart
    assert np.array_equal(run(node, person, pose_model="body_pose_model.pth")[0][0].numpy(), parsing_only)


def test_no_person_names_the_image_and_its_batch_index(node, person):
    blank = torch.ones_like(person)
    with pytest.raises(input_error(), match="^image: no person found in image 1 of the batch"):
        run(node, torch.cat([person, blank]))


def test_a_pose_without_a_person_names_the_image_and_its_batch_index(node, person, pose_json):
    pose = pose_json.pose_json_from_keypoints([scene.scene_keypoints(), None], 384, 512)
    with pytest.raises(input_error(), match="^image: no person found in image 1 of the batch .pose_keypoint"):
        run(node, torch.cat([person, person]), pose_keypoint=pose)


def test_grow_and_feather(node, person):
    base = run(node, person)[0][0]
    grown = run(node, person, grow=6)[0][0]
    shrunk = run(node, person, grow=-6)[0][0]
    assert (grown >= base).all() and (shrunk <= base).all() and grown.sum() > base.sum() > shrunk.sum()
    feathered = run(node, person, feather=4)[0][0]
    soft = (feathered > 0) & (feathered < 1)
    assert soft.any() and (feathered[TORSO] == 1).all() and (feathered[BACKGROUND] == 0).all()


@pytest.mark.parametrize("mode", ["add", "subtract", "replace", "intersect"])
def test_a_user_mask_combines_with_the_automatic_one(node, person, mode):
    auto = run(node, person)[0][0]
    drawn = torch.zeros(1, 512, 384)
    drawn[0, 0:40, 0:40] = 1.0  # background corner
    drawn[0, 200:240, 160:200] = 1.0  # on the torso
    mask = run(node, person, user_mask=drawn, user_mask_mode=mode)[0][0]
    expected = {
        "add": torch.maximum(auto, drawn[0]),
        "subtract": (auto - drawn[0]).clamp(0, 1),
        "replace": drawn[0],
        "intersect": torch.minimum(auto, drawn[0]),
    }[mode]
    assert torch.equal(mask, expected)


def test_a_user_mask_of_another_size_is_resized_to_the_image(node, person):
    drawn = torch.zeros(1, 256, 192)
    drawn[:, :20, :20] = 1.0
    mask = run(node, person, user_mask=drawn, user_mask_mode="replace")[0][0]
    assert mask.shape == (512, 384) and (mask[:40, :40] == 1).all() and mask.sum() == 40 * 40


def test_a_model_file_missing_from_the_folder_names_the_input(node, person):
    with pytest.raises(input_error(), match="^atr_model: 'gone.onnx' is not in ComfyUI/models/humanparsing"):
        run(node, person, atr="gone.onnx")
    with pytest.raises(input_error(), match="^pose_model: 'gone.pth' is not in ComfyUI/models/openpose"):
        run(node, person, pose_model="gone.pth")


def our_entries() -> list[tuple]:
    from comfyui_tryon.models import managed_models

    return sorted(key[:2] for key in managed_models.loaded_entries() if key[0] in ("parsing", "openpose"))


def test_free_model_and_node_cache_unloads_the_networks_and_the_next_run_loads_them_again(node, person):
    """What ComfyUI's "Free model and node cache" (and "Unload models") does: unload_all_models()."""
    import comfy.model_management
    import folder_paths

    first = run(node, person, pose_model="body_pose_model.pth")[0]
    paths = {
        ("parsing", folder_paths.get_full_path("humanparsing", "parsing_atr.onnx")),
        ("parsing", folder_paths.get_full_path("humanparsing", "parsing_lip.onnx")),
        ("openpose", folder_paths.get_full_path("openpose", "body_pose_model.pth")),
    }
    loaded = {(kind, path) for kind, path in our_entries()}
    assert {(kind, os.path.realpath(path)) for kind, path in paths} <= loaded
    comfy.model_management.unload_all_models()
    assert our_entries() == []
    assert not [m for m in comfy.model_management.current_loaded_models if type(m.model.model).__name__ in ("OnnxSession", "OpenPoseBodyNet")]
    again = run(node, person, pose_model="body_pose_model.pth")[0]
    assert torch.equal(again, first)
    assert {(kind, os.path.realpath(path)) for kind, path in paths} <= set(our_entries())


@pytest.fixture
def swap_folder(pack, tmp_path):
    """A temporary extra humanparsing folder (the shared fixture tree stays untouched)."""
    import folder_paths

    folder_paths.add_model_folder_path("humanparsing", str(tmp_path))
    yield tmp_path
    folder_paths.folder_names_and_paths["humanparsing"][0].remove(str(tmp_path))


def test_a_model_file_replaced_under_the_same_name_is_read_again(node, person, swap_folder):
    import folder_paths

    atr = folder_paths.get_full_path("humanparsing", "parsing_atr.onnx")
    lip = folder_paths.get_full_path("humanparsing", "parsing_lip.onnx")
    swap = swap_folder / "swap_atr.onnx"
    shutil.copy(atr, swap)
    expected = run(node, person)[0]
    assert torch.equal(run(node, person, atr="swap_atr.onnx")[0], expected)
    before = node.fingerprint_inputs(atr_model="swap_atr.onnx", lip_model="parsing_lip.onnx", pose_model="none")
    shutil.copy(lip, swap)  # new content under the same name: the LIP model, which the ATR input refuses
    assert node.fingerprint_inputs(atr_model="swap_atr.onnx", lip_model="parsing_lip.onnx", pose_model="none") != before  # ComfyUI runs the node again
    with pytest.raises(input_error(), match="^atr_model: swap_atr.onnx has 20 labels, the ATR model has 18"):
        run(node, person, atr="swap_atr.onnx")
    shutil.copy(atr, swap)
    assert torch.equal(run(node, person, atr="swap_atr.onnx")[0], expected)


# ------------------------------------------------------------------------------------------------ a real server workflow
def test_workflow_load_image_mask_preview_save(server):
    Image.fromarray(scene.paint(scene.scene_labels())).save(server.workdir / "input" / "mask_person.png")
    graph = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "mask_person.png"}},
        "mask": {
            "class_type": "TryOnAgnosticMask",
            "inputs": {
                "image": ["load", 0],
                "atr_model": "parsing_atr.onnx",
                "lip_model": "parsing_lip.onnx",
                "pose_model": "none",
                "category": "upper_body",
                "model_type": "hd",
                "grow": 0,
                "feather": 0,
            },
        },
        "to_image": {"class_type": "MaskToImage", "inputs": {"mask": ["mask", 0]}},
        "save_mask": {"class_type": "SaveImage", "inputs": {"images": ["to_image", 0], "filename_prefix": "agnostic_mask"}},
        "save_preview": {"class_type": "SaveImage", "inputs": {"images": ["mask", 1], "filename_prefix": "agnostic_preview"}},
    }
    entry = server.run(graph)
    assert comfy_host.execution_error(entry) is None, comfy_host.execution_error(entry)
    saved = {}
    for node_id in ("save_mask", "save_preview"):
        (image,) = entry["outputs"][node_id]["images"]
        png = server.get_bytes(f"/view?filename={image['filename']}&subfolder={image['subfolder']}&type={image['type']}")
        saved[node_id] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    mask, preview = saved["save_mask"], saved["save_preview"]
    assert mask.shape == preview.shape == (512, 384, 3)
    assert (mask[TORSO] == 255).all() and (mask[NECK] == 255).all() and (mask[RIGHT_HAND] == 255).all()
    assert (mask[FACE] == 0).all() and (mask[BACKGROUND] == 0).all() and (mask[470:490, 140:180] == 0).all()  # shoe
    assert (preview[TORSO] == 127).all()  # 0.5 grey
    assert (preview[FACE] == scene.COLOURS[11]).all() and (preview[BACKGROUND] == 255).all()
