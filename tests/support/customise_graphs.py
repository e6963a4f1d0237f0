"""API-format test graphs of IDM-VTON Customise: Apply on the pair -> Customise -> a new Apply -> KSampler -> Save."""

from __future__ import annotations

import graphs

CUSTOMISE_SETTINGS = {
    "steps": 2,
    "learning_rate": 0.001,
    "rank": 4,
    "target": "all decoder layers",
    "loss_region": "whole image",
    "seed": 0,
    "gradient_checkpointing": True,
    "lora_name": "customised_test",
}


def customise_graph(names: dict, **settings) -> dict:
    """The try-on test images (person, garment, mask, densepose file names) -> Apply on the pair -> Customise ->
    Apply (TryonNet + LoRA) with another garment (the inverted garment photo) -> KSampler -> SaveImage, and the
    loss map drawn by ComfyUI's Plot Loss Graph. `settings` override the Customise inputs."""
    graph = graphs.tryon_graph(names["person"], names["garment"], names["mask"], names["densepose"], steps=1)
    graph["customise"] = {
        "class_type": "IDMVTONCustomise",
        "inputs": {
            "model": ["apply", 0],
            "positive": ["apply", 1],
            "vae": ["ckpt", 2],
            "person_image": ["person", 0],
            **CUSTOMISE_SETTINGS,
            **settings,
        },
    }
    graph["loss_graph"] = {"class_type": "LossGraphNode", "inputs": {"loss": ["customise", 2], "filename_prefix": "customise_loss"}}
    return with_new_garment(graph, ["customise", 0])


def with_new_garment(graph: dict, tryon_model: list) -> dict:
    """`graph` sampling `tryon_model` (a TryonNet MODEL) through a second Apply with the inverted garment photo."""
    graph["other_garment"] = {"class_type": "ImageInvert", "inputs": {"image": ["garment", 0]}}
    inputs = {**graph["apply"]["inputs"], "tryon_model": tryon_model, "garment_image": ["other_garment", 0]}
    graph["apply_new"] = {"class_type": "IDMVTONApply", "inputs": inputs}
    graph["sample"]["inputs"].update(model=["apply_new", 0], positive=["apply_new", 1], negative=["apply_new", 2], latent_image=["apply_new", 3])
    return graph


def stock_lora_graph(names: dict, lora_name: str) -> dict:
    """The same second try-on with TryonNet + the saved LoRA loaded by ComfyUI's stock LoraLoaderModelOnly."""
    graph = graphs.tryon_graph(names["person"], names["garment"], names["mask"], names["densepose"], steps=1)
    graph["lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["tryon", 0], "lora_name": lora_name, "strength_model": 1.0}}
    return with_new_garment(graph, ["lora", 0])


def plain_graph(names: dict) -> dict:
    """The same second try-on on the unchanged TryonNet (no customisation)."""
    graph = graphs.tryon_graph(names["person"], names["garment"], names["mask"], names["densepose"], steps=1)
    return with_new_garment(graph, ["tryon", 0])
