import pytest, torch
from test_customise import fast_models, stock, lora_folder, pair_images, apply, customise, eps_losses, fixed_pairs  # noqa

def test_debug(fast_models, stock, lora_folder):
    tryon, garment_model = fast_models
    images = pair_images()
    prepared = apply(tryon, garment_model, stock, images)
    eps_losses(prepared, stock, images[0], fixed_pairs(2))
    customise(prepared, stock, images[0], steps=3, gradient_checkpointing=False)
