"""Tiny caption fixture: a random transformers CLIPModel in the Hugging Face folder layout, with ComfyUI's real CLIP tokenizer."""

from __future__ import annotations

import pathlib
import shutil

from comfy_host import COMFY_DIR

TINY_CLIP = "tiny-clip"
IMAGE_SIZE = 32
TOKENIZER_DIR = COMFY_DIR / "comfy" / "sd1_tokenizer"


def tiny_clip_config():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=16,
    )


def write_tiny_clip(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """config.json, model.safetensors, preprocessor_config.json and the tokenizer files (vocab.json, merges.txt, ...)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(tiny_clip_config())
    model.save_pretrained(str(folder), safe_serialization=True)
    # the standard CLIP preprocessing (shortest side bicubic, centre crop, OpenAI mean/std) at the tiny size
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(str(folder))
    tokenizer = CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER_DIR / name, folder / name)  # byte-identical to the files ComfyUI ships
    return folder


def write(models: pathlib.Path) -> None:
    """Writes the fixtures under `models/` (a ComfyUI models tree); existing files are kept."""
    folder = models / "garment_caption" / TINY_CLIP
    if not (folder / "model.safetensors").exists():
        write_tiny_clip(folder)


TINY_SIGLIP = "tiny-siglip"
SIGLIP_WORDS = (
    "a photo of garment with short long sleeves no sleeve round neck v-neck collar t-shirt blouse dress pants jeans skirt "
    "product clothing hood tank top sweater shirt red blue tee"
).split()


def write_tiny_siglip(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A random SiglipModel in the HF layout with a tiny trained SentencePiece tokenizer (spiece.model); logit scale 10, bias -2."""
    import io

    import sentencepiece
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    sentences = [" ".join(SIGLIP_WORDS[i : i + 6]) for i in range(len(SIGLIP_WORDS))] * 20
    spiece = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=spiece,
        vocab_size=48,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
        num_threads=1,
    )
    (folder / "spiece.model").write_bytes(spiece.getvalue())
    config = SiglipConfig(
        text_config={
            "vocab_size": 48,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "pad_token_id": 0,
            "bos_token_id": None,
            "eos_token_id": 1,
        },
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": 8},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(float(torch.tensor(10.0).log()))
        model.logit_bias.fill_(-2.0)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer = SiglipTokenizer(str(folder / "spiece.model"), model_max_length=16)
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer=tokenizer).save_pretrained(str(folder))
    return folder
