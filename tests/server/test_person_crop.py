"""Person crop and paste-back: box geometry, the crop/paste round trip, and bit-identical pixels outside the mask."""

from __future__ import annotations

import io

import comfy_host
import cv2
import fixtures_parsing
import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module", autouse=True)
def crop(pack):
    """The crop geometry (every test here needs the pack imported, hence autouse)."""
    from comfyui_tryon.preprocess import person_crop

    return person_crop


@pytest.fixture(scope="module")
def paste(pack):
    from comfyui_tryon.preprocess import paste_back

    return paste_back


def input_error():
    from comfyui_tryon.errors import TryOnInputError

    return TryOnInputError


def crop_node(pack, image, width, height, margin, person_source, **optional):
    """TryOnPersonCrop's outputs (image, mask, crop_info), called as ComfyUI calls a V3 node: by input name."""
    node = pack.nodes.NODE_CLASS_MAPPINGS["TryOnPersonCrop"]
    return node.execute(image=image, width=width, height=height, margin=margin, person_source=person_source, **optional).result


def paste_node(pack, original_image, tryon_image, mask, grow, feather, **optional):
    node = pack.nodes.NODE_CLASS_MAPPINGS["TryOnPasteBack"]
    return node.execute(original_image=original_image, tryon_image=tryon_image, mask=mask, grow=grow, feather=feather, **optional).result


def photo(height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A random photo as LoadImage gives it: uint8 values / 255."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)).float() / 255.0


def rect_mask(height: int, width: int, box, batch: int = 1) -> torch.Tensor:
    left, top, right, bottom = box
    mask = torch.zeros(batch, height, width)
    mask[:, top:bottom, left:right] = 1.0
    return mask


def far_from(mask: torch.Tensor, distance: float) -> np.ndarray:
    """(H, W) pixels farther than `distance` from every mask pixel > 0 (Euclidean)."""
    outside = (mask.numpy() <= 0).astype(np.uint8)
    return cv2.distanceTransform(outside, cv2.DIST_L2, 5) > distance


def reach(grow: int, feather: int, resampling: float = 1.0) -> float:
    """How far the blend weight can reach from the mask: the grow disk, then the feather's square Gaussian kernel (corner
    at feather x sqrt 2), plus the mask's resampling between the crop and the photo."""
    return grow + feather * 2**0.5 + resampling


def contains(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


# ------------------------------------------------------------------------------------------------ box geometry
@pytest.mark.parametrize(
    "person,image_size", [((300, 200, 420, 700), (1000, 900)), ((10, 10, 60, 30), (640, 480)), ((0, 0, 5, 5), (64, 64)), ((500, 40, 900, 460), (1280, 720))]
)
def test_box_has_the_exact_target_aspect_contains_the_person_with_margin_and_stays_in_the_frame(crop, person, image_size):
    width, height = image_size
    box = crop.person_box(person, width, height, 768, 1024, margin=0.1)
    left, top, right, bottom = box
    assert (right - left) * 4 == (bottom - top) * 3
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    pad = 0.1 * max(person[2] - person[0], person[3] - person[1])
    padded = (max(0, person[0] - pad), max(0, person[1] - pad), min(width, person[2] + pad), min(height, person[3] + pad))
    assert contains(box, padded)


def test_a_larger_margin_gives_a_larger_box_around_the_same_centre(crop):
    person = (400, 300, 500, 600)
    small = crop.person_box(person, 1200, 1200, margin=0.0)
    large = crop.person_box(person, 1200, 1200, margin=0.5)
    # margin 0: 300 tall -> 225 x 300 (75 units of 3x4), centred on x = 450 (337.5 rounds to even)
    assert small == (338, 300, 563, 600)
    # margin 0.5 x 300 on every side: 400 x 600 needed, 600 tall wins -> 450 x 600 centred on (450, 450)
    assert large == (225, 150, 675, 750)


def test_box_is_shifted_inside_the_frame_at_the_edges(crop):
    box = crop.person_box((0, 100, 40, 300), 800, 600, margin=0.1)  # person touching the left edge
    assert box[0] == 0 and contains(box, (0, 100, 40, 300))
    box = crop.person_box((760, 350, 800, 600), 800, 600, margin=0.1)  # bottom-right corner
    assert box[2] == 800 and box[3] == 600 and contains(box, (760, 350, 800, 600))
    assert (box[2] - box[0]) * 4 == (box[3] - box[1]) * 3


def test_a_person_too_tall_for_the_frame_gets_the_largest_box_centred_on_them(crop):
    # 90 x 300 portrait strip, person spans the full height: the largest 3:4 box is 90 x 120, centred on the person
    box = crop.person_box((20, 0, 70, 300), 90, 300, margin=0.1)
    assert box == (0, 90, 90, 210)
    # the person sits low: the box follows them and stops at the bottom edge
    assert crop.person_box((20, 150, 70, 300), 90, 300, margin=0.1) == (0, 165, 90, 285)
    assert crop.person_box((20, 200, 70, 300), 90, 300, margin=0.3) == (0, 180, 90, 300)


def test_an_odd_target_size_gets_the_nearest_pixel_aspect(crop):
    box = crop.person_box((100, 100, 300, 500), 1000, 1000, 770, 1030, margin=0.0)
    width, height = box[2] - box[0], box[3] - box[1]
    assert height == 400 and abs(width / height - 770 / 1030) <= 0.5 / height


def test_centred_crop_is_the_largest_centred_box_like_the_demo(crop):
    assert crop.centre_box(1000, 1000) == (125, 0, 875, 1000)
    assert crop.centre_box(600, 1000) == (0, 100, 600, 900)
    assert crop.centre_box(768, 1024) == (0, 0, 768, 1024)
    assert crop.centre_box(1920, 1080, 1024, 1024) == (420, 0, 1500, 1080)


def test_person_boxes_from_mask_labels_and_keypoints(crop):
    mask = torch.zeros(50, 40)
    mask[10:20, 5:9] = 1.0
    assert crop.bbox_from_mask(mask) == (5, 10, 9, 20)
    assert crop.bbox_from_mask(torch.zeros(50, 40)) is None
    labels = np.zeros((50, 40), np.uint8)
    labels[3:7, 30:33] = 4
    assert crop.bbox_from_labels(labels) == (30, 3, 33, 7)
    points = np.zeros((18, 2))
    points[0] = (20, 10)  # nose
    points[10] = (22, 40)  # right ankle; all others missing (0, 0)
    points[5] = (1, 1)  # counts as missing too
    assert crop.bbox_from_keypoints(points, 40, 50, pad=0.0) == (20, 10, 23, 41)
    assert crop.bbox_from_keypoints(points, 40, 50, pad=0.1) == (17, 7, 26, 44)  # 0.1 x 30 px on every side
    assert crop.bbox_from_keypoints(np.zeros((18, 2)), 40, 50) is None


def test_auto_source_tries_mask_then_pose_then_parsing_then_centre_and_runs_parsing_only_when_needed(crop):
    calls = []

    def labels():
        calls.append(1)
        out = np.zeros((50, 40), np.uint8)
        out[1:4, 1:4] = 2
        return out

    def pose():
        points = np.zeros((18, 2))
        points[1], points[8] = (20, 10), (20, 30)
        return points

    mask = torch.zeros(50, 40)
    mask[5:9, 5:9] = 1
    assert crop.locate_person("auto", 0, 40, 50, mask, pose, labels) == ((5, 5, 9, 9), "mask")
    assert crop.locate_person("auto", 0, 40, 50, torch.zeros(50, 40), pose, labels)[1] == "pose"
    assert calls == []
    assert crop.locate_person("auto", 0, 40, 50, None, lambda: None, labels) == ((1, 1, 4, 4), "parsing")
    assert calls == [1]
    assert crop.locate_person("auto", 0, 40, 50) == (None, "centre")
    assert crop.locate_person("centre", 0, 40, 50, mask) == (None, "centre")


@pytest.mark.parametrize(
    "source,kwargs,input_name",
    [
        ("mask", {}, "mask"),
        ("pose", {}, "pose_keypoint"),
        ("parsing", {}, "parsing_model"),
        ("mask", {"mask": torch.zeros(50, 40)}, "mask"),
        ("pose", {"keypoints": lambda: None}, "pose_keypoint"),
        ("parsing", {"labels": lambda: np.zeros((50, 40), np.uint8)}, "parsing_model"),
    ],
)
def test_a_named_source_without_a_person_is_a_clear_error(crop, source, kwargs, input_name):
    with pytest.raises(input_error(), match=f"^{input_name}:"):
        crop.locate_person(source, 0, 40, 50, **kwargs)


# ------------------------------------------------------------------------------------------------ crop + paste round trip
def test_crop_at_the_box_size_then_paste_with_a_full_mask_restores_the_photo_exactly(crop, paste):
    original = photo(200, 300)
    box = crop.person_box((100, 50, 160, 150), 300, 200, 768, 1024, margin=0.1)
    width, height = box[2] - box[0], box[3] - box[1]
    info = crop.CropInfo(300, 200, (box,), width, height)
    cut = crop.crop_image(original, box, width, height)
    out = paste.paste_back(original, cut, torch.ones(1, height, width), 0, 0, info)
    assert torch.equal(out, original)


def test_crop_resize_paste_puts_things_back_where_they_were(crop, paste):
    original = torch.zeros(1, 400, 600, 3)
    original[0, 120:160, 250:290] = 1.0  # a white square in the person's area
    box = crop.person_box((200, 100, 400, 380), 600, 400, 96, 128, margin=0.1)
    info = crop.CropInfo(600, 400, (box,), 96, 128)
    cut = crop.crop_image(original, box, 96, 128)
    assert cut.shape == (1, 128, 96, 3)
    back = paste.paste_back(original, cut, torch.ones(1, 128, 96), 0, 0, info)
    restored = back[0, ..., 0] > 0.5
    ys, xs = torch.nonzero(restored, as_tuple=True)
    assert abs(ys.min().item() - 120) <= 1 and abs(ys.max().item() - 159) <= 1
    assert abs(xs.min().item() - 250) <= 1 and abs(xs.max().item() - 289) <= 1


def test_cropped_mask_follows_the_image(crop):
    mask = rect_mask(400, 600, (250, 120, 290, 160))
    box = crop.person_box((250, 120, 290, 160), 600, 400, 96, 128, margin=1.0)
    small = crop.crop_mask(mask, box, 96, 128)
    scale = 128 / (box[3] - box[1])
    ys, xs = torch.nonzero(small[0] > 0.5, as_tuple=True)
    assert abs(ys.min().item() - (120 - box[1]) * scale) <= 1.5 and abs(xs.min().item() - (250 - box[0]) * scale) <= 1.5


# ------------------------------------------------------------------------------------------------ paste-back invariance
@pytest.mark.parametrize("with_crop", [True, False])
def test_pixels_outside_the_feathered_mask_are_bit_identical(crop, paste, with_crop):
    original = photo(240, 320, seed=1)
    result_size = (128, 96) if with_crop else (120, 160)  # without a crop: a half-size result, resized to the photo
    result = photo(*result_size, seed=2)
    grow, feather = 5, 4
    if with_crop:
        box = crop.person_box((120, 60, 200, 200), 320, 240, 96, 128, margin=0.1)
        info = crop.CropInfo(320, 240, (box,), 96, 128)
        mask = torch.zeros(1, 128, 96)
        mask[:, 40:90, 30:70] = 1.0
    else:
        info, box = None, (0, 0, 320, 240)
        mask = rect_mask(240, 320, (100, 80, 180, 150))
    out = paste.paste_back(original, result, mask, grow, feather, info)
    full = paste.mask_in_original(mask, [box], (240, 320), [(128, 96)] if with_crop else [(120, 160)])
    alpha = paste.blend_weights(full, [box], grow, feather)[0]
    untouched = alpha == 0
    assert torch.equal(out[0][untouched], original[0][untouched])
    assert untouched.float().mean() > 0.5
    # the untouched region holds every pixel beyond the blend's reach from the mask
    far = torch.from_numpy(far_from(full[0], reach(grow, feather)))
    assert torch.equal(out[0][far], original[0][far])
    assert not torch.equal(out[0][~untouched], original[0][~untouched])
    core = alpha == 1
    assert core.any() and (out[0][core] - _in_box(result, box)[core]).abs().max() < 1e-6


def _in_box(result, box):
    canvas = torch.zeros(240, 320, 3)
    left, top, right, bottom = box
    canvas[top:bottom, left:right] = (
        torch.nn.functional.interpolate(result.movedim(-1, 1), size=(bottom - top, right - left), mode="bilinear", align_corners=False, antialias=True)
        .movedim(1, -1)
        .clamp(0, 1)[0]
    )
    return canvas


def test_a_mask_at_the_original_size_works_with_a_crop_and_stays_inside_the_box(crop, paste):
    original = photo(240, 320, seed=3)
    box = (100, 40, 190, 160)
    info = crop.CropInfo(320, 240, (box,), 96, 128)
    mask = rect_mask(240, 320, (60, 60, 260, 120))  # reaches beyond the box on both sides
    out = paste.paste_back(original, torch.zeros(1, 128, 96, 3), mask, 0, 6, info)
    changed = (out != original).any(-1)[0]
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert xs.min() >= 100 and xs.max() < 190 and ys.min() >= 40 and ys.max() < 160
    assert changed[90, 150]


def test_paste_back_through_save_image_keeps_the_png_bytes_outside_the_mask(pack, fixture_models):
    import nodes

    pixels = np.random.default_rng(4).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    original = torch.from_numpy(pixels).float()[None] / 255.0
    mask = rect_mask(96, 128, (40, 30, 80, 70))
    (out,) = paste_node(pack, original, 1.0 - original, mask, 3, 3)
    saved = nodes.SaveImage().save_images(out, filename_prefix="paste_back_test")["ui"]["images"][0]
    png = fixture_models.parent / "output" / saved["subfolder"] / saved["filename"]
    written = np.asarray(Image.open(png))
    far = far_from(mask[0], reach(3, 3))
    assert np.array_equal(written[far], pixels[far])
    assert np.abs(written[45:55, 55:65].astype(int) - (255 - pixels[45:55, 55:65])).max() <= 1  # SaveImage truncates


# ------------------------------------------------------------------------------------------------ batches and errors
def test_batches_broadcast_one_original_to_many_results_with_a_box_each(crop, paste):
    original = photo(200, 300)
    boxes = ((0, 0, 90, 120), (150, 50, 240, 170), (210, 80, 300, 200))
    info = crop.CropInfo(300, 200, boxes, 96, 128)
    out = paste.paste_back(original, torch.ones(3, 128, 96, 3), torch.ones(1, 128, 96), 0, 0, info)
    assert out.shape == (3, 200, 300, 3)
    for index, (left, top, right, bottom) in enumerate(boxes):
        inside = torch.zeros(200, 300, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert (out[index][inside] == 1).all() and torch.equal(out[index][~inside], original[0][~inside])


def test_mismatched_inputs_name_the_input(crop, paste):
    original = photo(200, 300, batch=2)
    with pytest.raises(input_error(), match="batch sizes do not match.*original_image=2.*tryon_image=3"):
        paste.paste_back(original, photo(128, 96, batch=3), torch.ones(1, 128, 96))
    with pytest.raises(input_error(), match="^mask: its size 50x40"):
        paste.paste_back(original, photo(128, 96, batch=2), torch.ones(1, 40, 50))
    info = crop.CropInfo(640, 480, ((0, 0, 90, 120),), 96, 128)
    with pytest.raises(input_error(), match="^original_image: it is 300x200 but crop_info"):
        paste.paste_back(original, photo(128, 96, batch=2), torch.ones(1, 128, 96), crop_info=info)


def test_an_empty_mask_pastes_nothing_and_returns_the_original(pack):
    original = photo(64, 48)
    (out,) = paste_node(pack, original, photo(64, 48, batch=2, seed=9), torch.zeros(1, 64, 48), 4, 4)
    assert out.shape == (2, 64, 48, 3) and torch.equal(out[0], original[0]) and torch.equal(out[1], original[0])


# ------------------------------------------------------------------------------------------------ the crop node
def test_crop_node_finds_each_person_of_a_batch_from_the_mask(crop, pack):
    image = photo(300, 400, batch=2)
    mask = torch.zeros(2, 300, 400)
    mask[0, 50:150, 20:80] = 1
    mask[1, 100:280, 300:380] = 1
    crops, crop_masks, info = crop_node(pack, image, 96, 128, 0.1, "auto", mask=mask)
    assert crops.shape == (2, 128, 96, 3) and crop_masks.shape == (2, 128, 96)
    assert contains(info.boxes[0], (20, 50, 80, 150)) and contains(info.boxes[1], (300, 100, 380, 280))
    assert info.boxes[0] != info.boxes[1] and (info.original_width, info.original_height) == (400, 300)
    assert torch.equal(crops[1], crop.crop_image(image[1:], info.boxes[1], 96, 128)[0])
    assert crop_masks[1].sum() > 0.2 * 96 * 128


def test_crop_node_without_a_person_source_takes_the_centred_crop_and_an_empty_mask(pack):
    image = photo(300, 400)
    crops, crop_masks, info = crop_node(pack, image, 96, 128, 0.1, "auto")
    assert info.boxes == ((87, 0, 312, 300),) and not crop_masks.any()
    with pytest.raises(input_error(), match="^mask: person_source is 'mask'"):
        crop_node(pack, image, 96, 128, 0.1, "mask")
    with pytest.raises(input_error(), match="^mask: it is 40x30"):
        crop_node(pack, image, 96, 128, 0.1, "mask", mask=torch.ones(1, 30, 40))


def test_crop_node_finds_the_person_from_pose_keypoints(pack):
    image = photo(400, 600)
    flat = [0.0] * 54
    for index, (x, y) in {0: (400, 100), 1: (400, 150), 8: (380, 250), 10: (390, 330), 13: (420, 330)}.items():
        flat[3 * index : 3 * index + 3] = [x / 2, y / 2, 0.9]  # drawn on a half-size canvas
    pose = [{"people": [{"pose_keypoints_2d": flat}], "canvas_width": 300, "canvas_height": 200}]
    _, _, info = crop_node(pack, image, 96, 128, 0.1, "pose", pose_keypoint=pose)
    (box,) = info.boxes
    assert contains(box, (380, 100, 421, 331)) and (box[2] - box[0]) * 4 == (box[3] - box[1]) * 3
    assert box[3] - box[1] < 400  # around the person, not the whole frame
    _, _, auto = crop_node(pack, image, 96, 128, 0.1, "auto", mask=torch.zeros(1, 400, 600), pose_keypoint=pose)
    assert auto.boxes == info.boxes  # an empty mask falls through to the pose


def test_crop_node_finds_the_person_with_the_parsing_model(crop, pack):
    options = pack.nodes.NODE_CLASS_MAPPINGS["TryOnPersonCrop"].INPUT_TYPES()["optional"]["parsing_model"][1]
    assert options["options"][0] == options["default"] == "none" and "parsing_atr.onnx" in options["options"]
    labels = np.zeros((560, 640), np.uint8)
    labels[200:456, 300:492] = fixtures_parsing.scene_labels(192, 256)  # the person drawn at half size, off centre
    person = crop.bbox_from_labels(labels)
    image = torch.from_numpy(fixtures_parsing.paint(labels)).float()[None] / 255.0
    _, _, info = crop_node(pack, image, 96, 128, 0.1, "parsing", parsing_model="parsing_atr.onnx")
    (box,) = info.boxes
    found = crop.person_box(person, 640, 560, 96, 128, 0.1)
    assert all(abs(a - b) <= 8 for a, b in zip(box, found, strict=True)), (box, found)
    assert contains(box, (person[0] + 4, person[1] + 4, person[2] - 4, person[3] - 4))
    with pytest.raises(input_error(), match="^parsing_model: no person found"):
        crop_node(pack, torch.ones(1, 560, 640, 3), 96, 128, 0.1, "parsing", parsing_model="parsing_atr.onnx")


def test_crop_info_is_one_custom_type_from_the_crop_node_to_the_paste_node(pack):
    crop_class, paste_class = pack.nodes.NODE_CLASS_MAPPINGS["TryOnPersonCrop"], pack.nodes.NODE_CLASS_MAPPINGS["TryOnPasteBack"]
    assert list(crop_class.RETURN_TYPES) == ["IMAGE", "MASK", "TRYON_CROP_INFO"] and list(crop_class.RETURN_NAMES) == ["image", "mask", "crop_info"]
    assert paste_class.INPUT_TYPES()["optional"]["crop_info"][0] == "TRYON_CROP_INFO"
    assert list(paste_class.RETURN_TYPES) == list(paste_class.RETURN_NAMES) == ["IMAGE"]
    with pytest.raises(input_error(), match="^crop_info: expected the crop_info output of Try-On Person Crop"):
        paste_node(pack, photo(64, 48), photo(64, 48), torch.ones(1, 64, 48), 0, 0, crop_info={"boxes": [(0, 0, 48, 64)]})


# ------------------------------------------------------------------------------------------------ a real server workflow
def test_workflow_crop_invert_paste_keeps_the_photo_outside_the_mask(server):
    rng = np.random.default_rng(5)
    height, width = 180, 240
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 40)], -1)
    rgb = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
    alpha = np.full((height, width), 255, np.uint8)
    alpha[60:140, 100:150] = 0  # LoadImage's MASK = 1 - alpha: the repaint region
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(server.workdir / "input" / "crop_person.png")
    graph = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "crop_person.png"}},
        "crop": {
            "class_type": "TryOnPersonCrop",
            "inputs": {"image": ["load", 0], "mask": ["load", 1], "width": 96, "height": 128, "margin": 0.2, "person_source": "mask"},
        },
        "tryon": {"class_type": "ImageInvert", "inputs": {"image": ["crop", 0]}},
        "paste": {
            "class_type": "TryOnPasteBack",
            "inputs": {"original_image": ["load", 0], "tryon_image": ["tryon", 0], "mask": ["crop", 1], "grow": 2, "feather": 3, "crop_info": ["crop", 2]},
        },
        "save": {"class_type": "SaveImage", "inputs": {"images": ["paste", 0], "filename_prefix": "person_crop_workflow"}},
    }
    entry = server.run(graph)
    assert comfy_host.execution_error(entry) is None, comfy_host.execution_error(entry)
    (png,) = server.output_images(entry)
    saved = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert saved.shape == rgb.shape
    mask = torch.from_numpy(alpha == 0).float()
    far = far_from(mask, reach(2, 3, resampling=3))  # the mask went to the crop size and back
    assert np.array_equal(saved[far], rgb[far])
    inner, before = saved[75:125, 110:140].astype(int), rgb[75:125, 110:140].astype(int)
    assert np.abs(inner - (255 - before)).mean() < 0.3 * np.abs(inner - before).mean()  # the inverted crop was pasted here
