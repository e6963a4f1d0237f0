"""Garment caption: zero-shot tags over the taxonomy, the IDM-VTON prompts, user taxonomies, errors, memory management, a server run."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil

import comfy_host
import numpy as np
import pytest
import torch
from fixtures_caption import TINY_CLIP, TINY_SIGLIP, write_tiny_clip, write_tiny_siglip
from graphs import CHECKPOINT
from sample_images import write_tryon_inputs

REFERENCE_TAGS = comfy_host.REPO / "tests" / "data" / "vitonhd_garment_tags.json"
SCORE_LINE = re.compile(r"^(?P<label>[a-z ]+): (?P<tags>.+)$")


@pytest.fixture(scope="module")
def caption(pack):
    return comfy_host.pack_module("preprocess.garment_caption")


@pytest.fixture(scope="module")
def caption_pipeline(pack):
    return comfy_host.pack_module("pipeline.garment_caption")


@pytest.fixture(scope="module")
def caption_model(pack):
    return comfy_host.pack_module("models.caption_model")


@pytest.fixture(scope="module")
def managed(pack):
    return comfy_host.pack_module("models.managed_models")


@pytest.fixture(scope="module")
def taxonomy(pack):
    return comfy_host.pack_module("preprocess.garment_taxonomy")


@pytest.fixture(scope="module")
def node(pack):
    return pack.nodes.NODE_CLASS_MAPPINGS["TryOnGarmentCaption"]


@pytest.fixture(scope="module")
def caption_dir(fixture_models) -> pathlib.Path:
    return fixture_models.parent / "models" / "garment_caption"


def garment(seed: int, batch: int = 1) -> torch.Tensor:
    """A flat garment-like image: white background, a coloured block with a random texture."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.ones(batch, 96, 72, 3)
    image[:, 16:80, 12:60] = torch.rand(batch, 1, 1, 3, generator=generator) * 0.6 + 0.2 * torch.rand(batch, 64, 48, 3, generator=generator)
    return image


def run(node, image, category="upper_body", caption_model=TINY_CLIP, description="", taxonomy="built-in"):
    outputs = node.execute(image, category, caption_model, description, taxonomy).result
    return dict(zip(("description", "tryon_prompt", "garment_prompt", "scores"), outputs, strict=True))


def score_lines(scores: str) -> dict[str, list[tuple[str, float]]]:
    """label -> [(tag name, probability)] from the scores string (header lines are the ones without tag scores)."""
    parsed = {}
    for line in scores.splitlines():
        match = SCORE_LINE.match(line)
        if match and re.fullmatch(r"([^,]+ \d\.\d{3})(, [^,]+ \d\.\d{3})*", match["tags"]):
            parsed[match["label"]] = [(item.rsplit(" ", 1)[0], float(item.rsplit(" ", 1)[1])) for item in match["tags"].split(", ")]
    return parsed


def write_json(path: pathlib.Path, data) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path.name


# ----------------------------------------------------------------------------------------------
# The shipped taxonomy
# ----------------------------------------------------------------------------------------------
def test_the_shipped_taxonomy_carries_the_vitonhd_sleeve_neckline_vocabulary_in_caption_order(taxonomy):
    reference = json.loads(REFERENCE_TAGS.read_text())
    shipped = taxonomy.builtin_taxonomy()
    upper = shipped.for_category("upper_body")
    assert [a.label for a in upper] == ["sleeve length", "neckline", "item"]  # the order of IDM's captions
    for attribute, ref_key in zip(upper[:2], ("sleeveLength", "neckLine"), strict=True):
        assert {tag.name: tag.caption for tag in attribute.tags} == {name: name.lower() for name in reference["tags"][ref_key]}
    items = {tag.name: tag.caption for tag in upper[2].tags}
    assert items["T-shirts"] == "t-shirts" and items["Polo Shirts"] == "polo shirts"
    raw = json.loads(pathlib.Path(taxonomy.BUILTIN_TAXONOMY).read_text())
    for key, ref_key in (("sleeve_length", "sleeveLength"), ("neckline", "neckLine"), ("upper_item", "item")):
        for tag in raw["attributes"][key]["tags"]:
            assert tag.get("count") == reference["tags"][ref_key].get(tag["name"])
    for category in taxonomy.CATEGORIES:
        assert shipped.for_category(category)[-1].label == "item"


def test_lower_body_asks_no_sleeve_or_neckline_and_offers_pants_jeans_shorts_skirts(taxonomy):
    shipped = taxonomy.builtin_taxonomy()
    lower = shipped.for_category("lower_body")
    assert not {"sleeve_length", "neckline"} & {a.key for a in lower}
    items = {tag.caption for tag in lower[-1].tags}
    assert {"pants", "jeans", "shorts", "leggings", "skirt"} <= items
    dress = shipped.for_category("dresses")
    assert [a.key for a in dress][:2] == ["sleeve_length", "neckline"] and "dress" in {t.caption for t in dress[-1].tags}


# ----------------------------------------------------------------------------------------------
# Captions and prompts
# ----------------------------------------------------------------------------------------------
def test_caption_is_deterministic_across_calls_and_a_fresh_model_load(node):
    import comfy.model_management as mm

    first = run(node, garment(1))
    assert run(node, garment(1)) == first
    mm.unload_all_models()
    assert run(node, garment(1)) == first
    assert first["description"]


def test_the_description_is_the_best_tag_per_attribute_in_order_and_the_prompts_wrap_it(node, taxonomy):
    out = run(node, garment(2))
    parsed = score_lines(out["scores"])
    upper = taxonomy.builtin_taxonomy().for_category("upper_body")
    assert list(parsed) == [a.label for a in upper]
    best = [next(t.caption for t in a.tags if t.name == parsed[a.label][0][0]) for a in upper]
    assert out["description"] == " ".join(best)
    assert out["description"] == out["description"].lower()
    assert out["tryon_prompt"] == "model is wearing " + out["description"]
    assert out["garment_prompt"] == "a photo of " + out["description"]


def test_lower_body_caption_uses_only_lower_body_attributes(node, taxonomy):
    out = run(node, garment(3), category="lower_body")
    parsed = score_lines(out["scores"])
    assert list(parsed) == ["length", "fit", "item"]
    upper_words = {t.caption for a in taxonomy.builtin_taxonomy().for_category("upper_body")[:2] for t in a.tags}
    assert not any(word in out["description"] for word in upper_words if word)
    lower_items = {t.caption for t in taxonomy.builtin_taxonomy().for_category("lower_body")[-1].tags}
    assert any(out["description"].endswith(item) for item in lower_items)


def test_scores_show_the_top_three_per_attribute_with_softmax_probabilities(node, caption_pipeline, caption_model, taxonomy):
    image = garment(4)
    out = run(node, image)
    header = out["scores"].splitlines()[0]
    assert TINY_CLIP in header and "softmax" in header
    model = caption_model.load_caption_model(TINY_CLIP)
    scores = caption_pipeline.score_attributes(model, image[0], taxonomy.builtin_taxonomy().for_category("upper_body"))
    parsed = score_lines(out["scores"])
    for score in scores:
        assert sum(score.probabilities) == pytest.approx(1.0, abs=1e-5)  # CLIP: softmax over each attribute's tags
        shown = parsed[score.attribute.label]
        assert len(shown) == 3
        assert [p for _, p in shown] == sorted((p for _, p in shown), reverse=True)
        assert shown == [(tag.name, round(p, 3)) for tag, p in score.ranked()[:3]]


def test_a_batch_is_captioned_by_its_first_image_and_the_scores_say_so(node):
    batch = torch.cat([garment(5), garment(6)])
    out = run(node, batch)
    single = run(node, batch[:1])
    assert out["description"] == single["description"]
    assert "captioned the first one only" in out["scores"] and "captioned the first" not in single["scores"]


def test_zero_shot_probabilities_softmax_for_clip_and_sigmoid_for_siglip(caption):
    image = torch.tensor([1.0, 0.0])
    texts = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])  # cosines 1, 0, -1
    scale, bias = torch.tensor(np.log(10.0)), torch.tensor(-2.0)
    clip = caption.zero_shot_probabilities(image, texts, scale, None, "clip")
    assert torch.allclose(clip, torch.softmax(torch.tensor([10.0, 0.0, -10.0]), 0))
    siglip = caption.zero_shot_probabilities(image, texts, scale, bias, "siglip")
    assert torch.allclose(siglip, torch.sigmoid(torch.tensor([8.0, -2.0, -12.0])))


# ----------------------------------------------------------------------------------------------
# Manual description
# ----------------------------------------------------------------------------------------------
def test_a_typed_description_wins_keeps_its_casing_and_does_not_run_the_model(node, caption_dir):
    write_json(caption_dir / "broken-clip" / "config.json", {"model_type": "clip"})  # would fail to load if it were run
    out = run(node, garment(7), caption_model="broken-clip", description="  Red  Floral Blouse ")
    assert out["description"] == "Red Floral Blouse"
    assert out["tryon_prompt"] == "model is wearing Red Floral Blouse"
    assert out["garment_prompt"] == "a photo of Red Floral Blouse"
    assert "typed" in out["scores"]
    assert (
        run(node, garment(7), caption_model="none", description="short sleeve round neck t-shirts")["tryon_prompt"]
        == "model is wearing short sleeve round neck t-shirts"
    )


def test_without_a_model_or_a_description_the_error_names_both_inputs(node):
    with pytest.raises(Exception, match="caption_model / description") as error:
        run(node, garment(8), caption_model="none", description="   ")
    assert type(error.value).__name__ == "TryOnInputError"


# ----------------------------------------------------------------------------------------------
# Caption model folders
# ----------------------------------------------------------------------------------------------
def test_model_choices_are_folders_with_a_config_json(node, caption_dir):
    write_json(caption_dir / "taxonomies" / "listed.json", {"attributes": {}, "categories": {}})
    write_json(caption_dir / "taxonomies" / "nested" / "config.json", {"model_type": "clip"})  # under taxonomies/: never a model
    inputs = node.INPUT_TYPES()  # what /object_info shows, computed again on each refresh
    choices = inputs["required"]["caption_model"][1]["options"]
    assert choices[0] == "none" and TINY_CLIP in choices
    assert not any(c.startswith("taxonomies") or c.endswith(".json") for c in choices)
    assert "taxonomies/listed.json" in inputs["optional"]["taxonomy"][1]["options"]


def test_a_folder_that_is_not_clip_or_siglip_is_refused_clearly(node, caption_dir):
    write_json(caption_dir / "random-bert" / "config.json", {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1})
    with pytest.raises(Exception, match=r"caption_model: 'random-bert' is not a CLIP or SigLIP model \(config.json model_type is 'bert'"):
        run(node, garment(9), caption_model="random-bert")
    write_json(caption_dir / "no-weights-clip" / "config.json", {"model_type": "clip"})
    with pytest.raises(Exception, match=r"caption_model: cannot load 'no-weights-clip' as a clip model"):
        run(node, garment(9), caption_model="no-weights-clip")
    with pytest.raises(Exception, match=r"caption_model: '\.\./escape' is not a model folder"):
        run(node, garment(9), caption_model="../escape")


# ----------------------------------------------------------------------------------------------
# Custom taxonomy
# ----------------------------------------------------------------------------------------------
CUSTOM = {
    "templates": ["a photo of {}."],
    "attributes": {
        "colour": {"tags": [{"name": "Red", "caption": "red"}, {"name": "Blue", "caption": "blue", "prompt": "a blue garment"}]},
        "kind": {
            "label": "garment kind",
            "templates": ["a product shot of {}"],
            "tags": [{"name": "Tee", "caption": "tee"}, {"name": "Plain", "caption": ""}, {"name": "Top", "caption": "top"}],
        },
    },
    "categories": {"upper_body": ["colour", "kind"]},
}


def test_a_custom_taxonomy_file_gives_its_own_attributes_in_its_order(node, caption_dir):
    write_json(caption_dir / "taxonomies" / "custom.json", CUSTOM)
    out = run(node, garment(10), taxonomy="taxonomies/custom.json")
    parsed = score_lines(out["scores"])
    assert list(parsed) == ["colour", "garment kind"]
    assert len(parsed["colour"]) == 2
    colour = {"Red": "red", "Blue": "blue"}[parsed["colour"][0][0]]
    kind = {"Tee": "tee", "Plain": "", "Top": "top"}[parsed["garment kind"][0][0]]
    assert out["description"] == " ".join(w for w in (colour, kind) if w)
    with pytest.raises(Exception, match=r"taxonomy: taxonomies/custom.json has no 'lower_body' category"):
        run(node, garment(10), category="lower_body", taxonomy="taxonomies/custom.json")


@pytest.mark.parametrize(
    "content,where",
    [
        ('{"attributes": ', "is not valid JSON"),
        (json.dumps({"attributes": {"a": {"tags": []}}, "categories": {"upper_body": ["a"]}}), "attributes.a.tags: expected a non-empty list"),
        (
            json.dumps({"attributes": {"a": {"tags": [{"name": "X"}]}}, "categories": {"upper_body": ["a"]}}),
            r"attributes.a.tags\[0\]: missing key\(s\) 'caption'",
        ),
        (json.dumps({"attributes": {"a": {"tags": [{"name": "X", "captoin": "x"}]}}, "categories": {"upper_body": ["a"]}}), "unknown key"),
        (
            json.dumps({"attributes": {"a": {"templates": ["no placeholder"], "tags": [{"name": "X", "caption": "x"}]}}, "categories": {"upper_body": ["a"]}}),
            r"attributes.a.templates\[0\]: 'no placeholder' must contain '\{\}'",
        ),
        (
            json.dumps({"attributes": {"a": {"tags": [{"name": "X", "caption": "x"}]}}, "categories": {"upper_body": ["b"]}}),
            r"categories.upper_body: unknown attribute\(s\) 'b'",
        ),
        (json.dumps({"attributes": {"a": {"tags": [{"name": "X", "caption": "x"}]}}, "categories": {"tops": ["a"]}}), "unknown key"),
        (json.dumps(["not", "an", "object"]), "top level: expected an object"),
    ],
    ids=["json", "empty-tags", "missing-caption", "typo", "template", "unknown-attribute", "unknown-category", "top-level"],
)
def test_a_malformed_taxonomy_file_is_refused_naming_the_input_and_the_place(node, caption_dir, content, where):
    name = f"bad_{abs(hash(content)) % 10**8}.json"
    write_json(caption_dir / "taxonomies" / name, content)
    with pytest.raises(Exception, match=rf"^taxonomy: taxonomies/{name} .*{where}") as error:
        run(node, garment(11), taxonomy=f"taxonomies/{name}")
    assert type(error.value).__name__ == "TryOnInputError"


# ----------------------------------------------------------------------------------------------
# ComfyUI memory management
# ----------------------------------------------------------------------------------------------
def caption_entries(managed, folder: pathlib.Path | None = None) -> list[tuple]:
    """The managed-model keys of caption networks (of the model folder `folder` when given)."""
    real = None if folder is None else str(folder.resolve())
    return [key for key in managed.loaded_entries() if key[0].startswith("garment_caption:") and (real is None or key[1].startswith(real + "/"))]


def test_the_model_is_loaded_and_freed_by_comfyui_memory_management(node, caption_model, managed):
    import comfy.model_management as mm

    first = run(node, garment(12))
    patcher = caption_model.load_caption_model(TINY_CLIP).patcher
    assert caption_model.load_caption_model(TINY_CLIP).patcher is patcher  # held between runs: loaded once
    assert any(loaded.model is patcher for loaded in mm.current_loaded_models)
    assert patcher.model_size() > 0 and patcher.load_device == mm.get_torch_device()
    assert len(caption_entries(managed)) >= 1
    mm.free_memory(1e30, mm.get_torch_device())  # what ComfyUI does when another model needs the memory
    assert not any(loaded.model is patcher for loaded in mm.current_loaded_models)
    assert caption_entries(managed) == []  # nothing of it is kept by the pack
    assert run(node, garment(12)) == first  # loaded again from the files, same result
    reloaded = caption_model.load_caption_model(TINY_CLIP).patcher
    assert reloaded is not patcher and any(loaded.model is reloaded for loaded in mm.current_loaded_models)
    mm.unload_all_models()  # "Free model and node cache"
    assert not any(loaded.model is reloaded for loaded in mm.current_loaded_models)
    assert caption_entries(managed) == []
    assert run(node, garment(12)) == first


def test_a_replaced_weights_file_is_loaded_again_with_the_config_unchanged(node, caption_model, managed, caption_dir, tmp_path):
    folder = caption_dir / "replaced-clip"
    shutil.copytree(caption_dir / TINY_CLIP, folder, dirs_exist_ok=True)
    before = run(node, garment(14), caption_model="replaced-clip")
    first = caption_model.load_caption_model("replaced-clip").patcher
    config = (folder / "config.json").read_bytes()
    write_tiny_clip(tmp_path / "other-seed", seed=1)
    shutil.copy(tmp_path / "other-seed" / "model.safetensors", folder / "model.safetensors")
    assert (folder / "config.json").read_bytes() == config
    assert run(node, garment(14), caption_model="replaced-clip") != before  # the new weights score
    assert caption_model.load_caption_model("replaced-clip").patcher is not first
    assert len(caption_entries(managed, folder)) == 1  # the old version is dropped
    replaced = run(node, garment(14), caption_model="replaced-clip")
    shutil.copytree(tmp_path / "other-seed", caption_dir / "seed1-clip", dirs_exist_ok=True)
    fresh = run(node, garment(14), caption_model="seed1-clip")  # a folder that only ever held the new weights
    assert replaced["scores"].replace("replaced-clip", "seed1-clip") == fresh["scores"]


def test_the_node_fingerprint_follows_the_model_and_taxonomy_files(node, caption_dir):
    folder = caption_dir / "fingerprinted-clip"
    shutil.copytree(caption_dir / TINY_CLIP, folder, dirs_exist_ok=True)
    write_json(caption_dir / "taxonomies" / "fingerprinted.json", CUSTOM)
    inputs = {"caption_model": "fingerprinted-clip", "taxonomy": "taxonomies/fingerprinted.json", "category": "upper_body"}
    before = node.fingerprint_inputs(**inputs)
    assert node.fingerprint_inputs(**inputs) == before
    stat = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after_weights = node.fingerprint_inputs(**inputs)
    assert after_weights != before
    write_json(caption_dir / "taxonomies" / "fingerprinted.json", {**CUSTOM, "comment": "edited"})
    assert node.fingerprint_inputs(**inputs) != after_weights
    assert node.fingerprint_inputs(caption_model="none") == node.fingerprint_inputs()


# ----------------------------------------------------------------------------------------------
# Through the real server
# ----------------------------------------------------------------------------------------------
def test_server_garment_caption_feeds_clip_text_encode(server):
    inputs = write_tryon_inputs(server.workdir / "input", prefix="caption")
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "garment": {"class_type": "LoadImage", "inputs": {"image": inputs["garment"]}},
        "caption": {
            "class_type": "TryOnGarmentCaption",
            "inputs": {"garment_image": ["garment", 0], "category": "upper_body", "caption_model": TINY_CLIP, "description": "", "taxonomy": "built-in"},
        },
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": ["caption", 1], "clip": ["ckpt", 1]}},
        "garment_text": {"class_type": "CLIPTextEncode", "inputs": {"text": ["caption", 2], "clip": ["ckpt", 1]}},
        "both": {"class_type": "ConditioningConcat", "inputs": {"conditioning_to": ["positive", 0], "conditioning_from": ["garment_text", 0]}},
        "show_conditioning": {"class_type": "PreviewAny", "inputs": {"source": ["both", 0]}},
    }
    names = ("description", "tryon_prompt", "garment_prompt", "scores")
    for index, name in enumerate(names):
        graph[f"show_{name}"] = {"class_type": "PreviewAny", "inputs": {"source": ["caption", index]}}
    entry = server.run(graph)
    assert comfy_host.execution_error(entry) is None, comfy_host.execution_error(entry)
    assert entry["status"]["status_str"] == "success"
    texts = {name: entry["outputs"][f"show_{name}"]["text"][0] for name in names}
    assert texts["description"] and texts["tryon_prompt"] == "model is wearing " + texts["description"]
    assert texts["garment_prompt"] == "a photo of " + texts["description"]
    assert list(score_lines(texts["scores"])) == ["sleeve length", "neckline", "item"]
    assert "tensor(" in entry["outputs"]["show_conditioning"]["text"][0]  # the text encoders ran on the caption's prompts


# ----------------------------------------------------------------------------------------------
# Against the transformers forward (CLIP softmax, SigLIP sigmoid)
# ----------------------------------------------------------------------------------------------
ONE_TEMPLATE = {
    "attributes": {
        "kind": {
            "templates": ["a photo of {}"],
            "tags": [
                {"name": "Tee", "caption": "t-shirt"},
                {"name": "Blouse", "caption": "blouse"},
                {"name": "Dress", "caption": "dress"},
                {"name": "Jeans", "caption": "jeans"},
                {"name": "Skirt", "caption": "skirt"},
            ],
        }
    },
    "categories": {"upper_body": ["kind"]},
}


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_scores_match_the_transformers_forward_softmax_for_clip_sigmoid_for_siglip(node, caption_dir, kind):
    from PIL import Image
    from transformers import AutoProcessor, CLIPModel, SiglipModel

    name = TINY_CLIP
    if kind == "siglip":
        name = TINY_SIGLIP
        if not (caption_dir / name / "model.safetensors").exists():
            write_tiny_siglip(caption_dir / name)
    write_json(caption_dir / "taxonomies" / "one_template.json", ONE_TEMPLATE)
    image = garment(13)
    out = run(node, image, caption_model=name, taxonomy="taxonomies/one_template.json")
    assert ("sigmoid" if kind == "siglip" else "softmax") in out["scores"].splitlines()[0]

    folder = str(caption_dir / name)
    model = (SiglipModel if kind == "siglip" else CLIPModel).from_pretrained(folder, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    tags = ONE_TEMPLATE["attributes"]["kind"]["tags"]
    pil = Image.fromarray((image[0] * 255).round().byte().numpy())
    inputs = processor(
        text=[f"a photo of {t['caption']}" for t in tags],
        images=pil,
        return_tensors="pt",
        padding="max_length" if kind == "siglip" else True,
        max_length=16 if kind == "siglip" else None,
    )
    if kind == "siglip":
        inputs.pop("attention_mask", None)  # SigLIP is trained on fixed-length padded text without a mask
    with torch.no_grad():
        logits = model(**inputs).logits_per_image[0]
    expected = torch.sigmoid(logits) if kind == "siglip" else torch.softmax(logits, 0)
    order = sorted(range(len(tags)), key=lambda i: -float(expected[i]))
    assert score_lines(out["scores"])["kind"] == [(tags[i]["name"], round(float(expected[i]), 3)) for i in order[:3]]
    assert out["description"] == tags[order[0]]["caption"]
