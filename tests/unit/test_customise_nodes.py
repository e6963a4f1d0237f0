"""Try-On Garment from Person (pure), and both customisation nodes run by ComfyUI's in-process executor."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def customise_nodes(pack):
    """The two node classes, registered with the in-process ComfyUI (as the pack registers them)."""
    from comfyui_tryon.nodes.customise import NODES

    import nodes

    for node in NODES:
        nodes.NODE_CLASS_MAPPINGS.setdefault(node.GET_SCHEMA().node_id, node)
    return {node.GET_SCHEMA().node_id: node for node in NODES}


def labelled_photo(height: int = 130, width: int = 100):
    """A random person photo and a label map: upper clothes in a box, pants below it, face on top, background elsewhere."""
    from comfyui_tryon.preprocess.labels import FACE, PANTS, UPPER_CLOTHES

    generator = torch.Generator().manual_seed(4)
    person = torch.rand(1, height, width, 3, generator=generator)
    labels = np.zeros((height, width), np.uint8)
    labels[5:25, 35:65] = FACE
    labels[30:70, 20:80] = UPPER_CLOTHES
    labels[70:125, 25:75] = PANTS
    return person, labels


def parsing_image(labels: np.ndarray) -> torch.Tensor:
    from comfyui_tryon.preprocess.agnostic_mask import colourise_labels

    return torch.from_numpy(colourise_labels(labels)).float()[None] / 255.0


def test_parsing_colours_decode_to_their_labels_even_off_the_palette(pack):
    from comfyui_tryon.preprocess.agnostic_mask import PALETTE, colourise_labels
    from comfyui_tryon.preprocess.garment_from_person import labels_from_colours

    labels = np.random.default_rng(0).integers(0, len(PALETTE), (40, 30)).astype(np.uint8)
    colours = colourise_labels(labels)
    assert np.array_equal(labels_from_colours(colours), labels)
    nudged = np.clip(colours.astype(np.int16) + np.random.default_rng(1).integers(-6, 7, colours.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(labels_from_colours(nudged), labels)  # e.g. a parsing map saved as JPEG


def test_the_garment_is_cut_out_onto_white_at_the_try_on_size(pack):
    from comfyui_tryon.preprocess.garment_from_person import garment_from_person
    from comfyui_tryon.preprocess.images import resize_image
    from comfyui_tryon.preprocess.labels import UPPER_CLOTHES

    person, labels = labelled_photo()
    garment, mask = garment_from_person(person, parsing_image(labels), "upper_body")
    assert garment.shape == (1, 128, 96, 3) and mask.shape == (1, 128, 96)  # the person's size rounded down to /8
    expected_mask = torch.nn.functional.interpolate(torch.from_numpy(labels == UPPER_CLOTHES).float()[None, None], size=(128, 96), mode="nearest")[0]
    assert torch.equal(mask, expected_mask)
    inside = mask[0].bool()
    assert torch.equal(garment[0][~inside], torch.ones_like(garment[0][~inside]))  # white everywhere else
    assert torch.equal(garment[0][inside], resize_image(person, 128, 96)[0][inside])  # the garment's own pixels, in place


def test_a_parsing_map_of_another_size_and_the_lower_body_category(pack):
    from comfyui_tryon.preprocess.garment_from_person import garment_from_person
    from comfyui_tryon.preprocess.labels import PANTS

    person, labels = labelled_photo(128, 96)
    bigger = np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1)  # the parsing ran at twice the size
    garment, mask = garment_from_person(person, parsing_image(bigger), "lower_body")
    assert torch.equal(mask[0], torch.from_numpy(labels == PANTS).float())
    assert torch.equal(garment[0][mask[0] == 0], torch.ones(int((mask[0] == 0).sum()), 3))


def test_no_garment_of_the_category_names_the_parsing_input(pack):
    from comfyui_tryon.errors import TryOnInputError
    from comfyui_tryon.preprocess.garment_from_person import garment_from_person

    person, labels = labelled_photo()
    with pytest.raises(TryOnInputError, match=r"^parsing: no dresses garment found"):
        garment_from_person(person, parsing_image(np.where(labels == 4, 0, labels).astype(np.uint8)), "dresses")
    with pytest.raises(TryOnInputError, match=r"^category:"):
        garment_from_person(person, parsing_image(labels), "hat")


def test_the_garment_node_returns_image_and_mask(customise_nodes):
    person, labels = labelled_photo()
    output = customise_nodes["TryOnGarmentFromPerson"].execute(person, parsing_image(labels), "upper_body")
    garment, mask = output.result
    assert garment.shape == (1, 128, 96, 3) and mask.shape == (1, 128, 96) and 0 < float(mask.mean()) < 1


@pytest.fixture
def input_images(pack, tmp_path):
    """The try-on test images in a fresh ComfyUI input folder."""
    import folder_paths
    import sample_images

    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path / "input"))
    try:
        yield sample_images.write_tryon_inputs(tmp_path / "input")
    finally:
        folder_paths.set_input_directory(previous)


def test_the_in_process_executor_runs_customise_then_a_new_apply(customise_nodes, executor, input_images, tmp_path, monkeypatch):
    import folder_paths

    loras = tmp_path / "loras"
    loras.mkdir()
    paths, extensions = folder_paths.folder_names_and_paths["loras"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras)] + list(paths), extensions))
    from customise_graphs import customise_graph

    run = executor(customise_graph(input_images, lora_name="executor_customised"))  # nodes run under torch.inference_mode, as in a server
    assert run["success"], run["messages"]
    assert [p.name for p in loras.iterdir()] == ["executor_customised_00001.safetensors"]
    assert run["history"]["outputs"]["loss_graph"]["images"]  # ComfyUI's Plot Loss Graph drew the loss map
    assert run["history"]["outputs"]["save"]["images"]
