"""Reliability matrix, preprocessing and captions, through the shared reliability server (tests/reliability_host.py).

Preprocessing on synthetic photos the tiny fixtures understand (fixtures_parsing paints people in colours the
colour-rule parsing nets parse; the fixture DensePose finds the red regions): no person, two people, a person cut
off at the frame edge. Captions: empty, very long (more than 77 CLIP tokens, end to end through the try-on) and
non-ASCII descriptions. And TorchScript-named files that would run code if they were unpickled.

Each case checks the outcome (an error naming the node input and the fix, or the documented result), that the
server is alive, and that the next valid try-on prompt succeeds.
"""

from __future__ import annotations

import io
import shutil
import zipfile

import comfy_host
import fixtures_densepose
import fixtures_parsing as scene
import numpy as np
import pytest
import reliability_host as rh
from PIL import Image

PHOTO_W, PHOTO_H = 192, 256
CROP_W, CROP_H = 96, 128
WHITE = 255  # the parsing nets' background colour
TWO_LEFT = (8, 100, 80)  # (x, y, scene width) of the larger person, in the left half (DensePose fixture: one detection per half)
TWO_RIGHT = (120, 150, 56)  # the smaller person, in the right half
EDGE = (-60, 64, 144)  # a person cut off by the left and bottom edges


# ----------------------------------------------------------------------------------------------
# Photos
# ----------------------------------------------------------------------------------------------
def place(labels: np.ndarray, x: int, y: int, width: int) -> None:
    """Draws the synthetic person's label map, `width` wide (3:4), with its top-left corner at (x, y); cut at the frame."""
    person = scene.scene_labels(width, width * 4 // 3)
    height, full_w = labels.shape
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(full_w, x + person.shape[1]), min(height, y + person.shape[0])
    part = person[y0 - y : y1 - y, x0 - x : x1 - x]
    region = labels[y0:y1, x0:x1]
    region[part != 0] = part[part != 0]


def labels_of(*people: tuple[int, int, int]) -> np.ndarray:
    labels = np.zeros((PHOTO_H, PHOTO_W), np.uint8)
    for person in people:
        place(labels, *person)
    return labels


def person_bbox(labels: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(labels.any(1)), np.flatnonzero(labels.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


PHOTOS = {
    "pp_nobody.png": np.zeros((PHOTO_W, PHOTO_H), np.uint8),  # landscape: the centred crop is a visible box
    "pp_two.png": labels_of(TWO_LEFT, TWO_RIGHT),
    "pp_edge.png": labels_of(EDGE),
}


@pytest.fixture(scope="module")
def photos(host):
    for name, labels in PHOTOS.items():
        rh.png(host.workdir / "input", name, scene.paint(labels))
    return host


def load(name: str) -> dict:
    return rh.load_image(name)


def saved(host, entry: dict, node_id: str) -> list[np.ndarray]:
    """The images a SaveImage node of the prompt wrote."""
    out = []
    for image in entry["outputs"][node_id]["images"]:
        query = f"/view?filename={image['filename']}&subfolder={image['subfolder']}&type={image['type']}"
        out.append(np.asarray(Image.open(io.BytesIO(host.get_bytes(query)))))
    return out


def save(source: list, prefix: str) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": source, "filename_prefix": prefix}}


def mask_prompt(photo: str) -> dict:
    """TryOnAgnosticMask (parsing only) on a photo; the mask is saved as an image."""
    return {
        "photo": load(photo),
        "agnostic": {
            "class_type": "TryOnAgnosticMask",
            "inputs": {
                "image": ["photo", 0],
                "atr_model": "parsing_atr.onnx",
                "lip_model": "parsing_lip.onnx",
                "pose_model": "none",
                "category": "upper_body",
                "model_type": "hd",
                "grow": 0,
                "feather": 0,
            },
        },
        "mask_as_image": {"class_type": "MaskToImage", "inputs": {"mask": ["agnostic", 0]}},
        "save_mask": save(["mask_as_image", 0], "pp_mask"),
    }


def densepose_prompt(photo: str, person: str = "largest", model: str = fixtures_densepose.TUPLE_MODEL) -> dict:
    return {
        "photo": load(photo),
        "densepose_node": {
            "class_type": "TryOnDensePose",
            "inputs": {
                "image": ["photo", 0],
                "densepose_model": model,
                "detection_resolution": PHOTO_W,
                "score_threshold": 0.8,
                "person": person,
                "colormap": "parula",
            },
        },
        "save_densepose": save(["densepose_node", 0], "pp_densepose"),
    }


def crop_prompt(photo: str, person_source: str = "auto", parsing_model: str = "parsing_atr.onnx") -> dict:
    """TryOnPersonCrop, then a black crop pasted back with a full mask: the black pixels of the saved photo are the crop box."""
    return {
        "photo": load(photo),
        "crop": {
            "class_type": "TryOnPersonCrop",
            "inputs": {"image": ["photo", 0], "width": CROP_W, "height": CROP_H, "margin": 0.1, "person_source": person_source, "parsing_model": parsing_model},
        },
        "black": {"class_type": "EmptyImage", "inputs": {"width": CROP_W, "height": CROP_H, "batch_size": 1, "color": 0}},
        "full": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": CROP_W, "height": CROP_H}},
        "paste": {
            "class_type": "TryOnPasteBack",
            "inputs": {"original_image": ["photo", 0], "tryon_image": ["black", 0], "mask": ["full", 0], "grow": 0, "feather": 0, "crop_info": ["crop", 2]},
        },
        "save_paste": save(["paste", 0], "pp_crop"),
    }


def crop_box(host, entry: dict) -> tuple[int, int, int, int]:
    """The box that crop_prompt's paste-back blackened (painted photos have no pure black pixel)."""
    (image,) = saved(host, entry, "save_paste")
    return person_bbox((image == 0).all(axis=2))


def contains(outer, inner, slack: int = 0) -> bool:
    return outer[0] <= inner[0] + slack and outer[1] <= inner[1] + slack and outer[2] >= inner[2] - slack and outer[3] >= inner[3] - slack


def succeeds(host, prompt: dict) -> dict:
    status, message, entry = rh.outcome(host, prompt)
    assert status == "success", message
    return entry


def fails(host, prompt: dict, node_type: str, *fragments: str) -> str:
    status, message, _ = rh.outcome(host, prompt)
    assert status == "error", (status, message)
    assert message.startswith(f"{node_type}:") and "TryOnInputError" in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ----------------------------------------------------------------------------------------------
# 5. Preprocessing: no person
# ----------------------------------------------------------------------------------------------
def test_no_person_mask_node_names_the_image_and_the_fix(photos):
    fails(
        photos,
        mask_prompt("pp_nobody.png"),
        "TryOnAgnosticMask",
        "image: no person found in image 0 of the batch",
        "Use a photo of a person, or crop to the person first",
    )
    rh.assert_recovers(photos)


def test_no_person_densepose_gives_a_black_image_and_a_warning(photos):
    entry = succeeds(photos, densepose_prompt("pp_nobody.png"))
    (image,) = saved(photos, entry, "save_densepose")
    assert image.shape == (PHOTO_W, PHOTO_H, 3) and not image.any()
    assert "Try-On DensePose: no person found in image 0 of the batch; its DensePose image is black." in photos.log_text()
    rh.assert_recovers(photos)


def test_no_person_crop_auto_falls_back_to_the_centred_crop(photos):
    box = crop_box(photos, succeeds(photos, crop_prompt("pp_nobody.png", "auto")))
    assert box == (56, 0, 200, 192)  # the largest centred 3:4 box of the 256x192 photo
    rh.assert_recovers(photos)


def test_no_person_crop_from_parsing_names_the_input_and_the_fix(photos):
    fails(
        photos,
        crop_prompt("pp_nobody.png", "parsing"),
        "TryOnPersonCrop",
        "parsing_model: no person found in image 0 of the batch",
        "use person_source 'auto' or 'centre'",
    )
    rh.assert_recovers(photos)


# ----------------------------------------------------------------------------------------------
# 5. Preprocessing: two people
# ----------------------------------------------------------------------------------------------
def test_two_people_mask_node_masks_the_larger_one_like_the_original(photos):
    """The parsing labels both people, and IDM-VTON's rules keep only the largest contour of the mask: the larger
    person's top is repainted, the other person is left as they are (as the original does)."""
    entry = succeeds(photos, mask_prompt("pp_two.png"))
    (mask,) = saved(photos, entry, "save_mask")
    mask = mask[..., 0] > 127
    labels = PHOTOS["pp_two.png"]
    half = PHOTO_W // 2
    assert mask[:, :half][labels[:, :half] == 4].mean() > 0.9  # the larger person's upper clothes
    assert not mask[:, half:].any()  # nothing of the smaller person
    assert mask[labels == 11].mean() < 0.1  # the face is kept (up to the quarter-resolution parsing's edge)
    rh.assert_recovers(photos)


@pytest.mark.parametrize("person", ["largest", "all"])
def test_two_people_densepose_draws_the_largest_or_everyone(photos, person):
    entry = succeeds(photos, densepose_prompt("pp_two.png", person))
    (image,) = saved(photos, entry, "save_densepose")
    half = PHOTO_W // 2
    assert image[:, :half].any()  # the larger person, left
    assert image[:, half:].any() == (person == "all")
    rh.assert_recovers(photos)


def test_two_people_crop_from_parsing_frames_both(photos):
    """The parsing box covers every person: the crop centres on the group (a mask or pose picks one person)."""
    box = crop_box(photos, succeeds(photos, crop_prompt("pp_two.png", "parsing")))
    assert (box[2] - box[0]) * CROP_H == (box[3] - box[1]) * CROP_W  # the try-on aspect
    labels = PHOTOS["pp_two.png"]
    half = PHOTO_W // 2
    assert contains(box, person_bbox(labels[:, :half]), slack=4) and contains(box, person_bbox(labels[:, half:]), slack=4)
    rh.assert_recovers(photos)


# ----------------------------------------------------------------------------------------------
# 5. Preprocessing: a person cut off at the frame edge
# ----------------------------------------------------------------------------------------------
def test_person_at_the_frame_edge_crop_is_clamped_inside_the_frame(pack, photos):
    from comfyui_tryon.preprocess.person_crop import person_box

    labels = PHOTOS["pp_edge.png"]
    person = person_bbox(labels)
    assert person[0] == 0 and person[3] > PHOTO_H - 10  # cut by the left edge, reaching the bottom
    box = crop_box(photos, succeeds(photos, crop_prompt("pp_edge.png", "auto")))
    expected = person_box(person, PHOTO_W, PHOTO_H, CROP_W, CROP_H, 0.1)
    assert box[0] == 0 and box[3] == PHOTO_H  # shifted inside the frame, not padded
    assert all(abs(a - b) <= 8 for a, b in zip(box, expected, strict=True)), (box, expected)
    assert (box[2] - box[0]) * CROP_H == (box[3] - box[1]) * CROP_W
    assert contains(box, person, slack=4)
    rh.assert_recovers(photos)


def test_person_at_the_frame_edge_mask_reaches_the_edge(photos):
    """The cut-off top is masked up to the frame edge, except the outermost pixel column: the original's hole fill
    clears the image border (kept here for parity)."""
    entry = succeeds(photos, mask_prompt("pp_edge.png"))
    (mask,) = saved(photos, entry, "save_mask")
    mask = mask[..., 0] > 127
    tops = PHOTOS["pp_edge.png"] == 4
    assert mask[tops].mean() > 0.9
    assert mask[:, 1][tops[:, 1]].all() and not mask[:, 0].any()
    assert mask[PHOTOS["pp_edge.png"] == 11].mean() < 0.1
    rh.assert_recovers(photos)


# ----------------------------------------------------------------------------------------------
# 6. Captions
# ----------------------------------------------------------------------------------------------
LONG_DESCRIPTION = " ".join(["short sleeve round neck t-shirts with a small embroidered logo on the left chest,"] * 12)
NON_ASCII = "robe à manches courtes, col rond — 半袖 Tシャツ 👕 ünïcødé"


def caption_node(description: str, caption_model: str = "none") -> dict:
    return {
        "class_type": "TryOnGarmentCaption",
        "inputs": {"garment_image": ["garment", 0], "category": "upper_body", "caption_model": caption_model, "description": description},
    }


def caption_tryon_graph(description: str, seed: int = 5) -> dict:
    """The try-on graph whose positive and garment prompts come from the caption node; the prompt texts are shown too."""
    return rh.graph(
        seed=seed,
        caption=caption_node(description),
        positive={"class_type": "CLIPTextEncode", "inputs": {"text": ["caption", 1], "clip": ["ckpt", 1]}},
        garment_text={"class_type": "CLIPTextEncode", "inputs": {"text": ["caption", 2], "clip": ["ckpt", 1]}},
        show_tryon_prompt={"class_type": "PreviewAny", "inputs": {"source": ["caption", 1]}},
        show_garment_prompt={"class_type": "PreviewAny", "inputs": {"source": ["caption", 2]}},
    )


def clip_tokens(text: str) -> int:
    """How many tokens ComfyUI's SD/SDXL CLIP tokenizer makes of `text` (start/end tokens not counted)."""
    from transformers import CLIPTokenizer

    folder = comfy_host.COMFY_DIR / "comfy" / "sd1_tokenizer"
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("description", ["", "   \t  "], ids=["empty", "whitespace-only"])
def test_an_empty_description_without_a_caption_model_names_both_inputs(photos, description):
    prompt = {
        "garment": rh.load_image(rh.base_inputs()["garment"]),
        "caption": caption_node(description),
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["caption", 0]}},
    }
    fails(photos, prompt, "TryOnGarmentCaption", "caption_model / description: give a description", "or choose a caption model from models/garment_caption")
    rh.assert_recovers(photos)


@pytest.mark.parametrize("description", [LONG_DESCRIPTION, NON_ASCII], ids=["over-77-tokens", "non-ascii"])
def test_a_long_or_non_ascii_description_works_end_to_end(photos, description):
    """Caption -> CLIPTextEncode -> IDM-VTON Apply -> KSampler. A long text is encoded as several 77-token chunks,
    so the positive and the garment conditioning are longer than the negative (77 tokens)."""
    tokens = clip_tokens(f"model is wearing {description}")
    if description == LONG_DESCRIPTION:
        assert tokens > 2 * 75  # three 77-token chunks: 231 positive tokens against the negative's 77
    else:
        assert tokens < 75
    graph = caption_tryon_graph(description)
    entry = succeeds(photos, graph)
    (image,) = saved(photos, entry, "save")
    assert image.shape == (rh.HEIGHT, rh.WIDTH, 3) and image.std() > 0
    assert entry["outputs"]["show_tryon_prompt"]["text"] == [f"model is wearing {description}"]
    assert entry["outputs"]["show_garment_prompt"]["text"] == [f"a photo of {description}"]
    rh.assert_recovers(photos)


# ----------------------------------------------------------------------------------------------
# 2. TorchScript-named files that would run code if unpickled
# ----------------------------------------------------------------------------------------------
def torchscript_with_pickle(path, pickled: bytes, member: str) -> None:
    """A real TorchScript archive (the DensePose fixture) whose `member` record is replaced by `pickled`."""
    source = path.with_suffix(".source")
    fixtures_densepose.save_scripted(fixtures_densepose.TupleDensePose(), source)
    with zipfile.ZipFile(source) as archive_in, zipfile.ZipFile(path, "w") as archive_out:
        for info in archive_in.infolist():
            data = archive_in.read(info.filename)
            archive_out.writestr(info, pickled if info.filename.endswith("/" + member) else data)
    source.unlink()


@pytest.fixture(scope="module")
def malicious_torchscripts(photos, fixture_models):
    """Files in models/densepose/reliability/ (removed afterwards), each creating its marker file if it were unpickled."""
    folder = fixture_models.parent / "models" / "densepose" / "reliability"
    folder.mkdir(parents=True, exist_ok=True)
    markers = photos.markers
    files = {}
    for name in ("pickle_renamed", "torch_save_zip", "archive_data_pkl", "archive_constants_pkl"):
        marker = markers / f"{name}.created"
        path = folder / f"{name}.torchscript"
        if name == "pickle_renamed":
            path.write_bytes(rh.malicious_pickle_bytes(marker))
        elif name == "torch_save_zip":
            rh.write_malicious_zip(path, marker)
        else:
            torchscript_with_pickle(path, rh.malicious_pickle_bytes(marker), name.removeprefix("archive_").replace("_pkl", ".pkl"))
        files[name] = (f"reliability/{path.name}", marker)
    yield files
    shutil.rmtree(folder)


@pytest.mark.parametrize("kind", ["pickle_renamed", "torch_save_zip", "archive_data_pkl", "archive_constants_pkl"])
def test_a_torchscript_named_file_that_would_run_code_is_refused_and_nothing_runs(photos, malicious_torchscripts, kind):
    name, marker = malicious_torchscripts[kind]
    assert name in rh.listed(photos, "TryOnDensePose", "densepose_model")
    message = fails(
        photos,
        densepose_prompt("pp_two.png", model=name),
        "TryOnDensePose",
        f"densepose_model: '{name.split('/')[-1]}' is not a TorchScript model",
        "Download densepose_r50_fpn_dl.torchscript",
    )
    assert "RuntimeError: )" not in message  # the reason is shown, not an empty first line
    assert not marker.exists()
    rh.assert_recovers(photos)
