"""DensePose node: IDM-VTON's colours (Parula on black), boxes, per-person resampling, output size, BGR, memory, errors."""

from __future__ import annotations

import io
import logging
import os
import shutil

import comfy_host
import cv2
import fixtures_densepose as fx
import numpy as np
import pytest
import torch
from PIL import Image

dp = comfy_host.pack_module("preprocess.densepose")
dp_model = comfy_host.pack_module("models.densepose_model")
managed = comfy_host.pack_module("models.managed_models")
errors = comfy_host.pack_module("errors")
tryon_inputs = comfy_host.pack_module("preprocess.tryon_inputs")

BACKGROUND = (40, 40, 40)
RED = (255, 0, 0)
BLUE = (0, 0, 255)


# ------------------------------------------------------------------------------------------------
# Independent expectations: cv2 colours, and bilinear+argmax of one-hot cell logits = nearest cell per axis
# ------------------------------------------------------------------------------------------------
def cv2_rgb(part: int, colormap=cv2.COLORMAP_PARULA) -> np.ndarray:
    value = np.array([[int(part * 255 / 24)]], dtype=np.uint8)  # the original: float * 255/24, truncated to uint8
    return cv2.applyColorMap(value, colormap)[0, 0, ::-1]


def nearest_cells(size: int) -> np.ndarray:
    """For each of `size` output pixels, the 28-px cell of the 112-px source pixel nearest to its sample point."""
    src = np.clip((np.arange(size) + 0.5) * fx.SEGM_SIZE / size - 0.5, 0, fx.SEGM_SIZE - 1)
    return np.floor(src + 0.5).astype(int) // fx.CELL


def expected_render(height: int, width: int, persons: list[tuple[tuple[float, float, float, float], int]], colormap=cv2.COLORMAP_PARULA) -> np.ndarray:
    """(H, W, 3) uint8: each (box in output pixels, detection index k) painted in order, black elsewhere."""
    labels = np.zeros((height, width), dtype=int)
    for (x0, y0, x1, y1), k in persons:
        x, y, w, h = int(x0), int(y0), max(int(x1 - x0), 1), max(int(y1 - y0), 1)
        rows, cols = nearest_cells(h), nearest_cells(w)
        parts = np.array(fx.cell_parts(k))[rows][:, cols] * np.array(fx.coarse_cells())[rows][:, cols]
        for dy in range(h):
            for dx in range(w):
                if 0 <= y + dy < height and 0 <= x + dx < width and parts[dy, dx] > 0:
                    labels[y + dy, x + dx] = parts[dy, dx]
    lut = np.stack([cv2_rgb(i, colormap) for i in range(25)])
    lut[0] = 0
    return lut[labels]


def cell_logits(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 112, 112) coarse and (25, 112, 112) fine one-hot logits of the fixture's cell pattern for detection k."""
    fine_cells, coarse_cells = np.array(fx.cell_parts(k)), np.array(fx.coarse_cells())
    fine_map = torch.from_numpy(np.kron(fine_cells, np.ones((fx.CELL, fx.CELL), dtype=int)))
    coarse_map = torch.from_numpy(np.kron(coarse_cells, np.ones((fx.CELL, fx.CELL), dtype=int)))
    fine = torch.nn.functional.one_hot(fine_map, 25).permute(2, 0, 1).float() * 8
    coarse = torch.nn.functional.one_hot(coarse_map, 2).permute(2, 0, 1).float() * 8
    return coarse, fine


def detections(boxes: list[list[float]], ks: list[int], scores: list[float] | None = None):
    coarse, fine = zip(*(cell_logits(k) for k in ks), strict=True)
    return dp.Detections(torch.tensor(boxes, dtype=torch.float32), torch.stack(coarse), torch.stack(fine), None if scores is None else torch.tensor(scores))


def scene(height: int, width: int, rects: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]]) -> np.ndarray:
    """A uint8 RGB image: dark grey with coloured rectangles (x0, y0, x1, y1)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    for (x0, y0, x1, y1), colour in rects:
        image[y0:y1, x0:x1] = colour
    return image


def as_comfy(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).float() / 255.0


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return np.clip(255.0 * image.numpy(), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def node(pack):
    return pack.nodes.NODE_CLASS_MAPPINGS["TryOnDensePose"]


def run_node(
    node,
    image: torch.Tensor,
    model: str = fx.TUPLE_MODEL,
    detection_resolution: int = 512,
    score_threshold: float = 0.8,
    person: str = "all",
    colormap: str = "parula",
) -> torch.Tensor:
    (out,) = node.execute(image, model, detection_resolution, score_threshold, person, colormap).result
    return out


# Landscape and portrait scenes: two red "persons" (left smaller, right larger) and a blue square (not a person)
LANDSCAPE = (256, 320, [((32, 32, 96, 224), RED), ((176, 16, 304, 240), RED), ((8, 8, 24, 24), BLUE)])
PORTRAIT = (384, 192, [((16, 64, 80, 320), RED), ((112, 32, 176, 352), RED), ((4, 4, 12, 12), BLUE)])


# ------------------------------------------------------------------------------------------------
# Colours
# ------------------------------------------------------------------------------------------------
def test_parula_lut_equals_cv2_applycolormap_for_all_25_part_values():
    lut = dp.part_lut("parula")
    assert lut.shape == (25, 3) and lut.dtype == np.uint8
    values = np.array([int(i * 255 / 24) for i in range(25)], dtype=np.uint8)
    assert values[1] == 10 and values[24] == 255
    reference = cv2.applyColorMap(values.reshape(-1, 1), cv2.COLORMAP_PARULA).reshape(-1, 3)[:, ::-1]
    assert np.array_equal(lut, reference)
    assert len({tuple(c) for c in lut}) == 25


def test_viridis_option_uses_cv2_viridis_and_differs_from_parula():
    reference = np.stack([cv2_rgb(i, cv2.COLORMAP_VIRIDIS) for i in range(25)])
    assert np.array_equal(dp.part_lut("viridis"), reference)
    assert not np.array_equal(dp.part_lut("viridis")[1:], dp.part_lut("parula")[1:])


def test_unknown_colormap_or_person_choice_is_refused():
    with pytest.raises(ValueError):
        dp.part_lut("jet")
    with pytest.raises(ValueError):
        dp.select_persons(detections([[0, 0, 16, 16]], [0]), "first")


# ------------------------------------------------------------------------------------------------
# Rendering (pure functions)
# ------------------------------------------------------------------------------------------------
def test_render_at_another_size_places_scaled_boxes_and_resamples_parts_per_person():
    # detector fed 100x80 (H x W); output 200x200: x scales by 2.5, y by 2 -> box (10, 16)-(90, 176)
    rendered = dp.render_densepose(detections([[4, 8, 36, 88]], [0]), (100, 80), (200, 200))
    assert rendered.shape == (200, 200, 3) and rendered.dtype == torch.float32
    expected = expected_render(200, 200, [((10, 16, 90, 176), 0)])
    assert np.array_equal(to_uint8(rendered), expected)
    assert (expected[:16] == 0).all() and (expected[:, :10] == 0).all() and (expected[16:176, 10:90] != 0).any()


def test_logits_are_resampled_bilinearly_without_aligned_corners_then_argmaxed():
    # a part per source column (1 + x % 24): the box's pixel i takes the column nearest to (i + 0.5) * 112 / w - 0.5
    columns = torch.arange(fx.SEGM_SIZE) % 24 + 1
    fine = torch.nn.functional.one_hot(columns.expand(fx.SEGM_SIZE, -1), 25).permute(2, 0, 1).float() * 8
    coarse = torch.zeros(2, fx.SEGM_SIZE, fx.SEGM_SIZE)
    coarse[0, :, :8] = 8  # coarse background in the first 8 columns (one-hot, so the nearest column wins there too)
    coarse[1, :, 8:] = 8
    for width in (80, 48, 176):
        parts = dp.part_index_in_box(coarse, fine, 20, width)
        src = np.floor(np.clip((np.arange(width) + 0.5) * fx.SEGM_SIZE / width - 0.5, 0, fx.SEGM_SIZE - 1) + 0.5).astype(int)
        expected = np.where(src >= 8, src % 24 + 1, 0)
        assert parts.shape == (20, width) and (parts.numpy() == expected).all(), width


def test_every_pixel_is_black_or_an_exact_colormap_colour():
    rendered = to_uint8(dp.render_densepose(detections([[3.7, 5.2, 61.9, 90.4], [20.5, 1.0, 70.0, 50.0]], [0, 1]), (96, 72), (333, 211)))
    palette = {tuple(c) for c in dp.part_lut("parula")[1:]} | {(0, 0, 0)}
    assert {tuple(c) for c in rendered.reshape(-1, 3)} <= palette
    assert rendered.shape == (333, 211, 3)


def test_a_later_person_covers_an_earlier_one_only_where_it_has_parts():
    boxes = [[16, 16, 112, 144], [64, 48, 176, 176]]
    rendered = to_uint8(dp.render_densepose(detections(boxes, [0, 1]), (192, 192), (192, 192)))
    assert np.array_equal(rendered, expected_render(192, 192, [((16, 16, 112, 144), 0), ((64, 48, 176, 176), 1)]))
    # person 1's coarse-background corner cell shows person 0 underneath, not black
    corner = rendered[48:60, 64:80]
    assert (corner != 0).any(axis=-1).all()
    assert np.array_equal(corner, expected_render(192, 192, [((16, 16, 112, 144), 0)])[48:60, 64:80])


def test_boxes_reaching_past_the_canvas_are_clipped():
    rendered = to_uint8(dp.render_densepose(detections([[-32, 160, 96, 288]], [2]), (256, 256), (256, 256)))
    assert np.array_equal(rendered, expected_render(256, 256, [((-32, 160, 96, 288), 2)]))


def test_largest_person_and_score_threshold_selection():
    dets = detections([[0, 0, 32, 32], [0, 0, 64, 48], [0, 0, 16, 16]], [0, 1, 2], scores=[0.95, 0.5, 0.85])
    assert dp.select_persons(dets, "largest").boxes.tolist() == [[0, 0, 64, 48]]
    assert len(dp.select_persons(dets, "all")) == 3
    kept = dp.apply_score_threshold(dets, 0.8)
    assert kept.boxes[:, 2].tolist() == [32, 16] and kept.scores.tolist() == pytest.approx([0.95, 0.85])
    assert dp.select_persons(kept, "largest").boxes.tolist() == [[0, 0, 32, 32]]
    assert len(dp.apply_score_threshold(detections([[0, 0, 8, 8]], [0]), 0.99)) == 1  # no scores: the export's own threshold


def test_detector_input_is_bgr_uint8_chw_at_the_detection_size():
    image = as_comfy(scene(64, 48, [((0, 0, 24, 64), RED)]))[0]
    fed = dp.to_detector_input(image, 128, 96)
    assert fed.shape == (3, 128, 96) and fed.dtype == torch.uint8
    assert fed[:, 10, 10].tolist() == [0, 0, 255] and fed[:, 10, 80].tolist() == list(BACKGROUND)
    assert dp.detection_size(1024, 768, 512) == (683, 512) and dp.detection_size(300, 900, 150) == (150, 450)


# ------------------------------------------------------------------------------------------------
# The node with the TorchScript fixture
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layout,detection_resolution",
    [(LANDSCAPE, 256), (LANDSCAPE, 128), (LANDSCAPE, 384), (PORTRAIT, 192)],
    ids=["landscape-same-size", "landscape-half-size", "landscape-1.5x", "portrait"],
)
@pytest.mark.parametrize("person", ["all", "largest"])
def test_node_renders_known_parts_into_known_boxes_at_the_input_size(node, layout, detection_resolution, person):
    height, width, rects = layout
    out = run_node(node, as_comfy(scene(height, width, rects)), detection_resolution=detection_resolution, person=person)
    assert out.shape == (1, height, width, 3)
    persons = [(rects[0][0], 0), (rects[1][0], 1)] if person == "all" else [(rects[1][0], 1)]
    assert np.array_equal(to_uint8(out[0]), expected_render(height, width, persons))


def test_node_feeds_bgr_so_a_blue_region_is_not_a_person(node):
    # red person on the left, blue square on the right: fed as RGB-in-BGR-order the fixture would find the blue one
    image = as_comfy(scene(128, 256, [((16, 16, 80, 112), RED), ((160, 32, 224, 96), BLUE)]))
    out = to_uint8(run_node(node, image, detection_resolution=128)[0])
    assert np.array_equal(out, expected_render(128, 256, [((16, 16, 80, 112), 0)]))
    assert (out[:, 128:] == 0).all()


def test_viridis_colormap_on_black(node):
    height, width, rects = LANDSCAPE
    out = to_uint8(run_node(node, as_comfy(scene(height, width, rects)), detection_resolution=256, colormap="viridis")[0])
    assert np.array_equal(out, expected_render(height, width, [(rects[0][0], 0), (rects[1][0], 1)], cv2.COLORMAP_VIRIDIS))
    assert (out[:16] == 0).all() and (out[:, :32] == 0).all()  # black background, not viridis' purple (68, 1, 84)


def test_score_threshold_applies_to_exports_that_return_scores(node):
    # the dict export scores a person by its red value / 255: left 1.0, right 180/255 = 0.71
    image = as_comfy(scene(256, 320, [((32, 32, 96, 224), RED), ((176, 16, 304, 240), (180, 0, 0))]))
    strict = to_uint8(run_node(node, image, model=fx.DICT_MODEL, detection_resolution=256, score_threshold=0.8)[0])
    assert np.array_equal(strict, expected_render(256, 320, [((32, 32, 96, 224), 0)]))
    loose = to_uint8(run_node(node, image, model=fx.DICT_MODEL, detection_resolution=256, score_threshold=0.5)[0])
    assert np.array_equal(loose, expected_render(256, 320, [((32, 32, 96, 224), 0), ((176, 16, 304, 240), 1)]))
    # the tuple export returns no scores: its built-in threshold decides, ours cannot drop anyone
    tuple_out = to_uint8(run_node(node, image, detection_resolution=256, score_threshold=0.99)[0])
    assert np.array_equal(tuple_out, loose)


def test_no_person_gives_a_black_image_and_a_warning(node, caplog):
    image = as_comfy(scene(96, 64, [((8, 8, 40, 40), BLUE)]))
    with caplog.at_level(logging.WARNING):
        out = run_node(node, image)
    assert out.shape == (1, 96, 64, 3) and float(out.abs().max()) == 0.0
    assert "no person found" in caplog.text


def test_a_batch_is_processed_per_image(node):
    first = scene(128, 128, [((16, 16, 48, 112), RED)])
    second = scene(128, 128, [((80, 32, 112, 96), RED)])
    out = run_node(node, as_comfy(first, second), detection_resolution=128)
    assert out.shape == (2, 128, 128, 3)
    assert np.array_equal(to_uint8(out[0]), expected_render(128, 128, [((16, 16, 48, 112), 0)]))
    assert np.array_equal(to_uint8(out[1]), expected_render(128, 128, [((80, 32, 112, 96), 0)]))


# ------------------------------------------------------------------------------------------------
# Model loading and ComfyUI memory management
# ------------------------------------------------------------------------------------------------
def densepose_entries(path=None) -> list[tuple]:
    """The managed-model keys of DensePose networks (of the file `path` when given)."""
    real = None if path is None else os.path.realpath(path)
    return [key for key in managed.loaded_entries() if key[0] == dp_model.KIND and (real is None or key[1] == real)]


def test_the_model_is_held_while_comfyui_keeps_it_and_freed_with_it(node):
    import comfy.model_management as mm

    image = as_comfy(scene(64, 64, [((8, 8, 40, 56), RED)]))
    first = run_node(node, image, detection_resolution=64)
    patcher = dp_model.densepose_patcher(fx.TUPLE_MODEL)
    assert dp_model.densepose_patcher(fx.TUPLE_MODEL) is patcher  # held between runs: loaded once
    assert isinstance(patcher.model, torch.jit.ScriptModule)
    assert patcher.load_device == mm.get_torch_device()
    assert any(loaded.model is patcher for loaded in mm.current_loaded_models)  # ComfyUI knows it and can free it
    assert len(densepose_entries()) >= 1
    mm.unload_all_models()  # "Free model and node cache", or another model needing the memory
    assert not any(loaded.model is patcher for loaded in mm.current_loaded_models)
    assert densepose_entries() == []  # nothing of it is kept by the pack
    assert torch.equal(run_node(node, image, detection_resolution=64), first)  # loaded again from the file, same result
    assert dp_model.densepose_patcher(fx.TUPLE_MODEL) is not patcher
    assert len(densepose_entries()) == 1


@pytest.fixture()
def densepose_folder(pack, tmp_path):
    """An extra models/densepose folder for files written by one test."""
    import folder_paths

    folder = tmp_path / "densepose"
    folder.mkdir()
    folder_paths.add_model_folder_path("densepose", str(folder))
    yield folder
    paths, extensions = folder_paths.folder_names_and_paths["densepose"]
    folder_paths.folder_names_and_paths["densepose"] = ([p for p in paths if p != str(folder)], extensions)


def test_a_changed_file_is_reloaded_and_its_old_version_dropped(densepose_folder):
    name = "changing_densepose.pt"
    shutil.copy(fx.save_scripted(fx.TupleDensePose(), densepose_folder / "src.pt"), densepose_folder / name)
    first = dp_model.densepose_patcher(name)
    assert dp_model.densepose_patcher(name) is first
    stat = os.stat(densepose_folder / name)
    os.utime(densepose_folder / name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert dp_model.densepose_patcher(name) is not first
    assert len(densepose_entries(densepose_folder / name)) == 1


def test_the_node_fingerprint_follows_the_model_file(node, densepose_folder):
    name = "fingerprinted_densepose.pt"
    fx.save_scripted(fx.TupleDensePose(), densepose_folder / name)
    before = node.fingerprint_inputs(densepose_model=name, detection_resolution=512)
    assert node.fingerprint_inputs(densepose_model=name, detection_resolution=512) == before
    stat = os.stat(densepose_folder / name)
    os.utime(densepose_folder / name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert node.fingerprint_inputs(densepose_model=name, detection_resolution=512) != before  # ComfyUI runs the node again
    assert node.fingerprint_inputs(densepose_model="no_such_file.pt") == repr("no_such_file.pt")  # the run reports it


class ReturnsOneTensor(torch.nn.Module):
    def forward(self, image: torch.Tensor, bgr: bool = True) -> torch.Tensor:
        return image.float()


@pytest.mark.parametrize("kind", ["empty", "corrupt", "state_dict", "wrong_output", "missing"])
def test_bad_model_files_give_a_clear_error_naming_the_input(node, densepose_folder, kind):
    name = f"bad_{kind}.pt"
    path = densepose_folder / name
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
    elif kind == "state_dict":
        torch.save({"conv.weight": torch.zeros(4, 3, 1, 1)}, str(path))
    elif kind == "wrong_output":
        fx.save_scripted(ReturnsOneTensor(), path)
    with pytest.raises(errors.TryOnInputError) as caught:
        run_node(node, as_comfy(scene(64, 64, [((8, 8, 40, 56), RED)])), model=name)
    message = str(caught.value)
    assert message.startswith("densepose_model:")
    assert {"empty": "empty", "corrupt": "not a TorchScript", "state_dict": "not a TorchScript", "wrong_output": "output", "missing": "is not in"}[
        kind
    ] in message


@pytest.mark.parametrize("input_name", ["person", "colormap"])
def test_an_unknown_choice_given_to_the_node_names_the_input(node, input_name):
    image = as_comfy(scene(64, 64, [((8, 8, 40, 56), RED)]))
    with pytest.raises(errors.TryOnInputError, match=rf"^{input_name}: must be one of"):
        run_node(node, image, **{input_name: "first"})


# ------------------------------------------------------------------------------------------------
# A DensePose image made elsewhere, through the apply node's input preparation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 48), (256, 192), (100, 120)], ids=["half", "double", "other-aspect"])
def test_a_densepose_image_of_another_size_is_resized_to_the_person(size):
    height, width = size
    person = torch.rand(1, 128, 96, 3)
    mask = torch.zeros(1, 128, 96)
    mask[:, 32:96, 24:72] = 1
    densepose = np.zeros((height, width, 3), np.uint8)
    densepose[height // 4 : height * 3 // 4, width // 4 : width // 2] = dp.part_lut()[5]
    densepose[height // 4 : height * 3 // 4, width // 2 : width * 3 // 4] = dp.part_lut()[20]
    pixels = tryon_inputs.prepare_pixels(person, mask, as_comfy(densepose), torch.rand(1, 128, 96, 3))
    out = pixels.densepose[0].numpy() * 255.0
    assert out.shape == (128, 96, 3)
    # stretched onto the person's frame: the same fractions of the image, the part colours away from the edges
    # (to float rounding of the antialiased filter's weights, < 1/255)
    assert np.abs(out[40:88, 28:44] - dp.part_lut()[5]).max() < 0.01
    assert np.abs(out[40:88, 52:68] - dp.part_lut()[20]).max() < 0.01
    assert (out[:28] < 0.01).all() and (out[100:] < 0.01).all() and (out[:, :20] < 0.01).all() and (out[:, 76:] < 0.01).all()


# ------------------------------------------------------------------------------------------------
# Through the real server
# ------------------------------------------------------------------------------------------------
def test_workflow_load_image_densepose_save_through_the_server(server):
    height, width, rects = LANDSCAPE
    Image.fromarray(scene(height, width, rects)).save(server.workdir / "input" / "densepose_person.png")
    graph = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "densepose_person.png"}},
        "densepose": {
            "class_type": "TryOnDensePose",
            "inputs": {
                "image": ["load", 0],
                "densepose_model": fx.TUPLE_MODEL,
                "detection_resolution": 128,
                "score_threshold": 0.8,
                "person": "all",
                "colormap": "parula",
            },
        },
        "save": {"class_type": "SaveImage", "inputs": {"images": ["densepose", 0], "filename_prefix": "densepose_test"}},
    }
    entry = server.run(graph)
    assert comfy_host.execution_error(entry) is None, comfy_host.execution_error(entry)
    (png,) = server.output_images(entry)
    saved = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.array_equal(saved, expected_render(height, width, [(rects[0][0], 0), (rects[1][0], 1)]))
