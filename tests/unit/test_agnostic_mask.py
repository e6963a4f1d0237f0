"""IDM-VTON's mask rules (docs/preprocessing.md, "Mask rules") on a synthetic parsing map and keypoints, pixel by pixel.

The scene (tests/support/fixtures_parsing.py, 384x512): hat over hair, face, neck, upper clothes, both arms with the hands at
their bottom (y 300..330), pants, two shoes and a bag beside the left arm. Keypoints: right shoulder/elbow/wrist at
x 107, y 150/230/300; left at x 277. The extended wrist is at y = 230 + 1.2 * 70 = 314, so the hand rows below keep.
"""

from __future__ import annotations

import cv2
import fixtures_parsing as scene
import numpy as np
import pytest


@pytest.fixture(scope="module", autouse=True)
def am(pack):
    """The mask rules (every test here needs the pack imported, hence autouse)."""
    from comfyui_tryon.preprocess import agnostic_mask

    return agnostic_mask


BOXES = {label: (slice(y0, y1), slice(x0, x1)) for label, x0, y0, x1, y1 in scene.SCENE_BOXES}
NECK_BOX = BOXES[scene.NECK_MARK]
FACE, UPPER, RIGHT_ARM, LEFT_ARM, PANTS = BOXES[11], BOXES[4], BOXES[15], BOXES[14], BOXES[6]
SHOES_BAG_HAT = (BOXES[9], BOXES[10], BOXES[16], BOXES[1])
RIGHT_HAND = (slice(316, 330), slice(92, 122))  # right-arm pixels below the drawn arm's end (y 314)
LEFT_HAND = (slice(316, 330), slice(262, 292))
RIGHT_UPPER_ARM = (slice(150, 300), slice(92, 122))


def labels(**relabel: int) -> np.ndarray:
    """The scene's parse (neck = 18); relabel={'old': new} e.g. pants to skirt."""
    out = scene.expected_person_labels(scene.scene_labels())
    for old, new in relabel.items():
        out[out == int(old.strip("_"))] = new
    return out


def mask(category: str = "upper_body", model_type: str = "hd", keypoints=..., parse=None) -> np.ndarray:
    from comfyui_tryon.preprocess.agnostic_mask import agnostic_mask

    keypoints = scene.scene_keypoints() if keypoints is ... else keypoints
    return agnostic_mask(labels() if parse is None else parse, keypoints, model_type, category)


def test_output_is_a_0_1_mask_at_the_label_size():
    out = mask()
    assert out.shape == (512, 384) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 1}


@pytest.mark.parametrize("category", ["upper_body", "dresses"])
def test_hands_are_kept_and_the_arms_repainted(category):
    out = mask(category)
    assert (out[RIGHT_HAND] == 0).all() and (out[LEFT_HAND] == 0).all()
    assert (out[RIGHT_UPPER_ARM] == 1).all() and (out[150:300, 262:292] == 1).all()


@pytest.mark.parametrize("category", ["upper_body", "dresses"])
def test_neck_is_repainted_face_is_not(category):
    out = mask(category)
    assert (out[NECK_BOX] == 1).all()
    assert (out[FACE] == 0).all()


def test_lower_body_leaves_the_neck():
    assert (mask("lower_body")[NECK_BOX] == 0).all()


@pytest.mark.parametrize("category", ["upper_body", "lower_body", "dresses"])
def test_shoes_bag_hat_and_face_are_kept(category):
    out = mask(category)
    for box in SHOES_BAG_HAT + (FACE,):
        assert (out[box] == 0).all()


def test_upper_body_repaints_the_upper_clothes_and_keeps_the_pants():
    out = mask("upper_body")
    assert (out[UPPER] == 1).all()
    assert (out[PANTS] == 0).all()


def test_lower_body_keeps_upper_clothes_and_arms():
    out = mask("lower_body")
    assert (out[UPPER] == 0).all() and (out[RIGHT_ARM] == 0).all() and (out[LEFT_ARM] == 0).all()
    assert (out[PANTS] == 1).all()


@pytest.mark.parametrize("lower", [6, 5], ids=["pants", "skirt"])
def test_dresses_repaints_skirt_and_pants(lower):
    parse = labels(_6=lower)
    assert (mask("dresses", parse=parse)[PANTS] == 1).all()
    assert (mask("upper_body", parse=parse)[PANTS] == 0).all()
    assert (mask("lower_body", parse=parse)[PANTS] == 1).all()


def test_arm_width_differs_between_hd_and_dc():
    # row 200 crosses the right upper arm: PIL's line of width 60 (hd) or 45 (dc) around x = 107, grown 8 px (4 x 5x5)
    hd_left = np.flatnonzero(mask(model_type="hd")[200])[0]
    dc_left = np.flatnonzero(mask(model_type="dc")[200])[0]
    assert (hd_left, dc_left) == (78 - 8, 85 - 8)
    assert mask(model_type="hd").sum() > mask(model_type="dc").sum()


def test_a_missing_wrist_uses_the_parsed_arm():
    keypoints = scene.scene_keypoints()
    keypoints[4] = 0.0  # right wrist missing
    out = mask(keypoints=keypoints)
    assert (out[RIGHT_HAND] == 1).all()  # the whole parsed arm is the drawn arm: no hand is kept
    assert (out[LEFT_HAND] == 0).all()  # the other side still draws its arm
    # the right side reaches exactly the parsed arm (x 92..121) grown by 8 px, not the 60 px line around x 107
    assert np.flatnonzero(out[200])[0] == 92 - 8


def test_parsing_only_fallback_repaints_both_arms_with_the_hands():
    out = mask(keypoints=None)
    assert (out[RIGHT_HAND] == 1).all() and (out[LEFT_HAND] == 1).all()
    assert (out[NECK_BOX] == 1).all() and (out[FACE] == 0).all()


def test_a_missing_shoulder_falls_back_to_the_parsed_arm_instead_of_a_line_to_the_corner():
    keypoints = scene.scene_keypoints()
    keypoints[2] = 0.0
    out = mask(keypoints=keypoints)
    assert (out[:120, :84] == 0).all()  # a line to (0, 0) would cross this corner
    assert (out[RIGHT_HAND] == 1).all()


def test_negative_coordinates_are_clamped_not_wrapped():
    keypoints = scene.scene_keypoints()
    keypoints[2] = (-40.0, 150.0)  # right shoulder left of the image
    out = mask(keypoints=keypoints)
    # a uint16 wrap would put the shoulder at x = 65496 and draw a 60 px band across the image right of the elbow
    assert (out[215:245, 355:384] == 0).all()
    assert (out[150:200, 30:60] == 1).all()  # the line runs from the clamped shoulder (0, 150) to the elbow


def test_only_the_largest_contour_is_kept():
    parse = labels()
    parse[400:440, 320:370] = 4  # a stray upper-clothes blob far from the person
    out = mask(parse=parse)
    assert (out[395:445, 315:375] == 0).all()
    assert (out[UPPER] == 1).all()


def test_holes_in_the_mask_are_filled_and_the_image_border_is_zero():
    parse = labels()
    parse[200:230, 170:200] = 16  # a bag held in front of the torso: fixed, but enclosed by the mask
    assert (mask(parse=parse)[200:230, 170:200] == 1).all()
    parse = labels()
    parse[300:512, 132:252] = 6  # pants down to the bottom edge
    out = mask("lower_body", parse=parse)
    assert (out[511] == 0).all() and (out[510, 132:252] == 1).all()


@pytest.mark.parametrize("size", [(768, 1024), (576, 768)], ids=["2x", "1.5x"])
def test_any_size_gives_the_384x512_geometry(am, size):
    width, height = size
    reference = cv2.resize(mask(), (width, height), interpolation=cv2.INTER_NEAREST)
    native = am.agnostic_mask(scene.expected_person_labels(scene.scene_labels(width, height)), scene.scene_keypoints(width, height), "hd", "upper_body")
    differ = native != reference
    assert differ.sum() < 0.015 * reference.sum()
    edge = cv2.morphologyEx(reference, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    distance_to_edge = cv2.distanceTransform((1 - edge).astype(np.uint8), cv2.DIST_L2, 3)
    assert distance_to_edge[differ].max() <= 1.5  # only the rasterisation of the edges differs


def test_unknown_category_or_model_type_is_refused_naming_the_input(am):
    from comfyui_tryon.errors import TryOnInputError

    with pytest.raises(TryOnInputError, match="^category: must be one of upper_body, lower_body, dresses, got 'shoes'"):
        am.agnostic_mask(labels(), None, "hd", "shoes")
    with pytest.raises(TryOnInputError, match="^model_type: must be one of hd, dc, got 'xl'"):
        am.agnostic_mask(labels(), None, "xl", "upper_body")


def test_colourised_parsing_uses_one_fixed_colour_per_label(am):
    parse = labels()
    picture = am.colourise_labels(parse)
    assert picture.shape == (512, 384, 3) and picture.dtype == np.uint8
    assert len({tuple(c) for c in am.PALETTE}) == 19  # labels 0..18, all distinct
    for label in np.unique(parse):
        assert (picture[parse == label] == am.PALETTE[label]).all()


def test_greyed_preview_greys_the_mask_and_keeps_the_rest(am):
    image = np.random.default_rng(0).random((8, 6, 3)).astype(np.float32)
    soft = np.zeros((8, 6), np.float32)
    soft[:4] = 1.0
    soft[4] = 0.5
    preview = am.greyed_preview(image, soft)
    assert np.allclose(preview[:4], 0.5) and np.array_equal(preview[5:], image[5:])
    assert np.allclose(preview[4], 0.5 * image[4] + 0.25)
