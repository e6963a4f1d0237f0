"""The garment caption networks (transformers CLIP or SigLIP): model folders, loading, running under ComfyUI's memory management.

A model is a Hugging Face folder in models/garment_caption (`config.json`, the weights, `preprocessor_config.json`,
the tokenizer files), listed by its `config.json` and loaded offline. The weights are read as tensors only
(`weights_io.read_state_dict`: safetensors, or pickles with `weights_only=True`) and handed to transformers with the
folder's config; nothing is downloaded and no code from the folder runs. See docs/preprocessing.md ("Garment caption").

Memory: the network is a `comfy.model_patcher.ModelPatcher` held by `models/managed_models.py`, the pack's one cache
of networks loaded by file name: ComfyUI loads it before each use and frees it like any other model ("Free model and
node cache", another model needing the memory); once freed, the next run loads the folder again. It is keyed on the
weights file (path, size, modification time) and on the content of the folder's small files (config, processor,
tokenizer), so a replaced weights file or an edited config is loaded again.
"""

from __future__ import annotations

import json
import os

import comfy.model_management
import comfy.model_patcher
import folder_paths
import torch

from ..errors import TryOnInputError
from ..model_folders import file_identity, resolve
from ..preprocess.garment_caption import image_to_pil, normalized, tag_features
from ..preprocess.garment_taxonomy import Attribute
from ..preprocess.images import check_resize
from .managed_models import managed_model
from .weight_checks import WeightsFile, check_state_dict, meta_module
from .weights_io import first_line, read_state_dict

FOLDER = "garment_caption"
CONFIG = "config.json"
TAXONOMY_DIR = "taxonomies/"  # user taxonomies live in the same folder; never a model
SUPPORTED_MODEL_TYPES = ("clip", "siglip")
TEXT_BATCH = 64
# The weights of a transformers folder, in the order transformers prefers them: a single file or a sharded index.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# The small files that decide the architecture, the preprocessing and the tokens (part of the model's identity).
SIDE_FILES = (
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
)
FOLDER_HINT = "The folder needs the weights (model.safetensors), preprocessor_config.json and the tokenizer files."
CAPTION_FIX = "Download the model folder again (e.g. openai/clip-vit-large-patch14), with the weights that match its config.json."


# ----------------------------------------------------------------------------------------------
# Model folders
# ----------------------------------------------------------------------------------------------
def listed_files() -> dict[str, str]:
    """Files of models/garment_caption by their '/'-separated name -> the name folder_paths knows."""
    return {name.replace(os.sep, "/"): name for name in folder_paths.get_filename_list(FOLDER)}


def model_folder_choices() -> list[str]:
    """Model folders under models/garment_caption: every folder holding a config.json (taxonomies/ excluded), sorted."""
    suffix = "/" + CONFIG
    return sorted({name[: -len(suffix)] for name in listed_files() if name.endswith(suffix) and not name.startswith(TAXONOMY_DIR)})


def model_folder(name: str, input_name: str = "caption_model") -> str:
    """The full path of a listed model folder; anything else (a free path, a folder without config.json) is refused."""
    if name not in model_folder_choices():
        raise TryOnInputError(
            f"{input_name}: '{name}' is not a model folder in ComfyUI/models/{FOLDER} (a folder with a config.json). Put it there and refresh."
        )
    return os.path.dirname(resolve(FOLDER, f"{name}/{CONFIG}", input_name))


def read_model_type(folder: str, name: str, input_name: str = "caption_model") -> str:
    """'clip' or 'siglip' from the folder's config.json; a clear error for anything else."""
    try:
        with open(os.path.join(folder, CONFIG), encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TryOnInputError(
            f"{input_name}: '{name}' has no readable config.json ({error}). Put a complete Hugging Face CLIP or SigLIP model folder in models/{FOLDER}."
        ) from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise TryOnInputError(
            f"{input_name}: '{name}' is not a CLIP or SigLIP model (config.json model_type is {model_type!r}; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}). Choose a folder such as openai/clip-vit-large-patch14 "
            "or google/siglip-so400m-patch14-384 saved in the Hugging Face layout."
        )
    return model_type


def weight_files(folder: str, name: str, kind: str, input_name: str = "caption_model") -> list[str]:
    """The folder's weight files: the single file, or every shard its index names (plain file names inside the folder)."""
    for file_name in WEIGHT_FILES:
        path = os.path.join(folder, file_name)
        if not os.path.isfile(path):
            continue
        if not file_name.endswith(".index.json"):
            return [path]
        try:
            with open(path, encoding="utf-8") as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise TryOnInputError(
                f"{input_name}: cannot load '{name}' as a {kind} model: {file_name} is not a valid shard index ({error}). {FOLDER_HINT}"
            ) from error
        paths = [os.path.join(folder, shard) for shard in shards if isinstance(shard, str) and os.path.basename(shard) == shard]
        missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
        if not paths or len(paths) != len(shards) or missing:
            raise TryOnInputError(
                f"{input_name}: cannot load '{name}' as a {kind} model: {file_name} names shards that are not in the folder "
                f"({', '.join(missing[:3]) or 'none usable'}). Download the model folder again."
            )
        return paths
    raise TryOnInputError(f"{input_name}: cannot load '{name}' as a {kind} model: it has no weights file ({', '.join(WEIGHT_FILES)}). {FOLDER_HINT}")


def other_model_files(folder: str, weights: list[str]) -> list[str]:
    """The files that decide the model besides its first weights file: the config and tokenizer files present, and
    the other shards."""
    return [path for path in (os.path.join(folder, f) for f in SIDE_FILES) if os.path.isfile(path)] + weights[1:]


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------
class CaptionNetwork(torch.nn.Module):
    """The transformers model with its processor (ModelPatcher sets attributes, e.g. `device`, that transformers models refuse).

    The per-attribute text features are kept here, so they live exactly as long as the loaded network.
    """

    def __init__(self, network: torch.nn.Module, processor, kind: str, name: str):
        super().__init__()
        self.network = network
        self.processor = processor
        self.kind = kind
        self.name = name
        self.max_text_length = int(getattr(network.config.text_config, "max_position_embeddings", 77))
        self.text_features: dict[tuple[str, ...], torch.Tensor] = {}


def build_caption_patcher(folder: str, name: str, kind: str, weights: list[str], input_name: str = "caption_model") -> comfy.model_patcher.ModelPatcher:
    """Loads the folder's model and processor (offline, local files only) into a ModelPatcher on ComfyUI's devices."""
    from transformers import AutoProcessor, CLIPModel, SiglipModel

    model_class = CLIPModel if kind == "clip" else SiglipModel
    state_dict = {}
    for path in weights:
        state_dict.update(read_state_dict(path, input_name))
    try:
        config = model_class.config_class.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # transformers raises OSError/ValueError/KeyError for broken configs
        raise TryOnInputError(f"{input_name}: cannot load '{name}' as a {kind} model: {type(error).__name__}: {first_line(error)}. {FOLDER_HINT}") from error
    check_caption_weights(model_class, config, state_dict, WeightsFile(input_name, weights_description(name, weights), CAPTION_FIX))
    try:
        model, info = model_class.from_pretrained(None, config=config, state_dict=state_dict, output_loading_info=True)
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # transformers raises OSError/ValueError/KeyError/RuntimeError for broken folders and wrong shapes
        raise TryOnInputError(f"{input_name}: cannot load '{name}' as a {kind} model: {type(error).__name__}: {first_line(error)}. {FOLDER_HINT}") from error
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise TryOnInputError(
            f"{input_name}: cannot load '{name}' as a {kind} model: its weights lack {len(missing)} tensor(s) "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}). The file is incomplete or of another model: download it again."
        )
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise TryOnInputError(f"{input_name}: '{name}' lacks an image processor or tokenizer (preprocessor_config.json, tokenizer files).")
    load_device = comfy.model_management.get_torch_device()
    dtype = torch.float16 if comfy.model_management.should_use_fp16(load_device, prioritize_performance=False) else torch.float32
    network = CaptionNetwork(model.eval().requires_grad_(False).to(dtype), processor, kind, name)
    return comfy.model_patcher.ModelPatcher(network, load_device=load_device, offload_device=comfy.model_management.unet_offload_device())


def weights_description(name: str, weights: list[str]) -> str:
    """How messages name a model folder's weights: 'tiny-clip' (model.safetensors), or its shard count."""
    files = os.path.basename(weights[0]) if len(weights) == 1 else f"{len(weights)} weight shards"
    return f"'{name}' ({files})"


def check_caption_weights(model_class, config, state_dict: dict[str, torch.Tensor], source: WeightsFile) -> None:
    """The folder's weights against the network its config describes (built on the meta device): exactly its keys
    (older files also hold the `position_ids` buffers, which transformers recomputes: allowed), its shapes, floating
    point and finite values (models/weight_checks.py)."""
    module = meta_module(lambda: model_class(config), source)
    recomputed = {key for key, _ in module.named_buffers()}
    expected = {key: value.shape for key, value in module.state_dict().items()}
    check_state_dict(state_dict, expected, source, ignored=lambda key: key in recomputed and key not in expected)


def load_caption_model(name: str, input_name: str = "caption_model") -> CaptionModel:
    """The caption model of the listed folder `name`, loaded onto ComfyUI's device (from the files when not held)."""
    folder = model_folder(name, input_name)
    kind = read_model_type(folder, name, input_name)
    weights = weight_files(folder, name, kind, input_name)
    patcher = managed_model(
        f"{FOLDER}:{kind}",
        weights[0],
        lambda _path: build_caption_patcher(folder, name, kind, weights, input_name),
        other_files=other_model_files(folder, weights),
        force_full_load=True,
    )
    return CaptionModel(patcher)


def model_fingerprint(name: str) -> str:
    """Changes when the folder's model changes (weights replaced, config edited); for the node's fingerprint."""
    folder = model_folder(name)
    weights = weight_files(folder, name, read_model_type(folder, name))
    return repr(tuple(file_identity(path) for path in [weights[0], *other_model_files(folder, weights)]))  # as managed_model keys it


def processor_resize(image_processor, height: int, width: int) -> tuple[int, int] | None:
    """(height, width) a transformers image processor resizes an image to: the shorter side to `shortest_edge` (CLIP),
    or a fixed height x width (SigLIP); None when it does not resize."""
    if not getattr(image_processor, "do_resize", True):
        return None
    size = getattr(image_processor, "size", None)

    def value(key: str):
        found = getattr(size, key, None)
        return size.get(key) if found is None and isinstance(size, dict) else found

    shortest = value("shortest_edge")
    if shortest:
        scale = shortest / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    if value("height") and value("width"):
        return int(value("height")), int(value("width"))
    return None


class CaptionModel:
    """A handle on a loaded caption patcher: encodes texts and images on ComfyUI's device (not a cache: it holds what the patcher holds)."""

    def __init__(self, patcher: comfy.model_patcher.ModelPatcher):
        self.patcher = patcher

    @property
    def network(self) -> CaptionNetwork:
        return self.patcher.model

    @property
    def name(self) -> str:
        return self.network.name

    @property
    def kind(self) -> str:
        return self.network.kind

    def _load(self) -> torch.device:
        comfy.model_management.load_models_gpu([self.patcher], force_full_load=True)
        device = self.patcher.load_device
        network = self.network
        if any(t.device != torch.device(device) for t in (*network.parameters(), *network.buffers())):
            # --novram loads partially, which leaves non-leaf parameters and buffers behind; the caption model is
            # small, so it runs whole on the device (ComfyUI's unload moves the whole module back)
            network.to(device)
        return device

    @staticmethod
    def _features(output) -> torch.Tensor:
        """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """(N, D) normalised text features on the CPU, float32."""
        device = self._load()
        network = self.network
        padding = "max_length" if network.kind == "siglip" else True
        chunks = []
        for start in range(0, len(texts), TEXT_BATCH):
            tokens = network.processor.tokenizer(
                texts[start : start + TEXT_BATCH], padding=padding, truncation=True, max_length=network.max_text_length, return_tensors="pt"
            )
            tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            if network.kind == "siglip":
                tokens.pop("attention_mask", None)  # SigLIP was trained without an attention mask (fixed-length padding)
            chunks.append(normalized(self._features(network.network.get_text_features(**tokens)).float()).cpu())
        return torch.cat(chunks)

    def attribute_features(self, attribute: Attribute) -> torch.Tensor:
        """(tags, D) features of an attribute's tags (kept with the loaded network, per prompt set)."""
        prompts = attribute.prompts()
        key = tuple(text for tag_prompts in prompts for text in tag_prompts)
        cache = self.network.text_features
        if key not in cache:
            flat = self.encode_texts(list(key))
            cache[key] = tag_features(flat.reshape(len(prompts), len(attribute.templates), -1))
        return cache[key]

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(D,) normalised image feature of one (H, W, 3) ComfyUI image, through the model's own image processor."""
        device = self._load()
        network = self.network
        image_processor = network.processor.image_processor
        target = processor_resize(image_processor, image.shape[0], image.shape[1])
        if target is not None:
            check_resize(
                "garment_image",
                (image.shape[1], image.shape[0]),
                target[::-1],
                "resized by the caption model's image processor",
                "Crop the garment photo to a less extreme aspect ratio (e.g. with 'Try-On Fit Image').",
            )
        pixels = image_processor(images=[image_to_pil(image)], return_tensors="pt")["pixel_values"]
        dtype = next(network.network.parameters()).dtype
        features = self._features(network.network.get_image_features(pixel_values=pixels.to(device, dtype)))
        return normalized(features.float())[0].cpu()

    def logit_scale_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model's learned logit scale (log) and, for SigLIP, its bias, as float32 CPU tensors."""
        model = self.network.network
        bias = getattr(model, "logit_bias", None)
        return model.logit_scale.detach().float().cpu(), (bias.detach().float().cpu() if bias is not None else None)
