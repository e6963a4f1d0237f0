"""IDM-VTON Customise: trains a LoRA on TryonNet's decoder on one photo pair, saves it, returns TryonNet + LoRA.

The IDM-VTON paper's customisation (README, "Customise IDM-VTON on one photo pair"): on the person photo x_p wearing a
garment and the photo x_g of that garment, fine-tune only TryonNet's decoder with the eps-prediction loss, GarmentNet
and the IP-Adapter frozen. Here:
- the pair comes prepared by IDM-VTON Apply (its MODEL and positive) and the target is the person photo's latent;
- each step draws a timestep uniformly from the model's 1000 and a noise, noises the target with sigma from the
  model's own (zero-terminal-SNR) table, runs TryonNet once through ComfyUI's sampling path (conditioning, the
  try-on wrappers and patches active; conditional branch only, no CFG), GarmentNet at the same timestep, and
  minimises the MSE between predicted and true noise in fp32 (not the stock trainer's x0 loss, which weights the
  eps error by sigma^2: 97% of the weight on the top 1% of timesteps under zero-terminal SNR);
- the garment features of a step stay in the bank until its backward has run (`held_step`);
- gradient checkpointing recomputes the decoder's layers with their own copy of `transformer_options`;
- weights the executor loaded in inference mode are replaced once by ordinary copies of the same values, so layers
  can save them for backward, and no gradient reaches any of them; every weight keeps its value (the input MODEL is
  unchanged);
- the LoRA is saved in ComfyUI's `loras` folder (never overwriting) and loaded back with ComfyUI's own LoRA code onto
  the input TryonNet without the try-on patches, exactly as LoraLoaderModelOnly would.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import comfy.lora
import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers
import comfy.sd
import comfy.utils
import folder_paths
import safetensors.torch
import torch

from ..attention.checkpointing import checkpointable_layers, gradient_checkpointing
from ..attention.decoder_lora import TARGETS, DecoderLoRA
from ..attention.reference_bank import ReferenceFeatureBank
from ..attention.reference_spec import EveryStep
from ..attention.tryon_patch import tryon_bank
from ..attention.tryon_unpatch import without_tryon_patches
from ..errors import TryOnInputError
from ..preprocess.images import as_rgb, resize_image
from ..preprocess.labels import check_choice
from ..preprocess.tryon_inputs import LATENT_FACTOR, working_size

LOSS_REGIONS = ("whole image", "mask")
MIN_STEPS = 2
MAX_NAME_PART_BYTES = 200  # of a file system's 255 per name; "_00001.safetensors" takes 18
DEFAULT_LORA_NAME = "idm_vton_customised"
LORA_DTYPE = torch.float16  # the file's dtype (the LoRA trains in fp32)
CAPTURE_KEY = "idm_vton_customise_eps"
NODE_NAME = "IDM-VTON Customise"
TRAINING_STARTED = "%s: training a rank-%d LoRA on %d decoder layers for %d steps; step 1 loss %.4f"
# Training memory beyond the weights at a 128x96 latent (1024x768) in 16-bit compute: decoder activations plus the
# merged W + dW kept for backward, without / with checkpointing (arithmetic from the real layer shapes, README).
ACTIVATION_BYTES_1024x768 = {False: 7.0e9, True: 1.3e9}
ADAM_BYTES_PER_PARAMETER = 16  # fp32 weight, gradient and two moments
_FORBIDDEN_NAME_CHARS = set('<>:"|?*\\')

T = TypeVar("T")
EpsFunction = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CustomiseOptions:
    """The training settings, checked once (each error names the node input)."""

    steps: int = 100
    learning_rate: float = 1e-4
    rank: int = 16
    target: str = TARGETS[0]
    loss_region: str = LOSS_REGIONS[0]
    seed: int = 0
    gradient_checkpointing: bool = True

    def __post_init__(self):
        if int(self.steps) < MIN_STEPS:
            raise TryOnInputError(
                f"steps: must be at least {MIN_STEPS}, got {self.steps} (a loss curve needs two points; ComfyUI's Plot Loss Graph "
                "fails on one). The paper customises with 100 steps."
            )
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise TryOnInputError(f"learning_rate: must be a positive number, got {self.learning_rate}. The default is 1e-4.")
        if int(self.rank) < 1:
            raise TryOnInputError(f"rank: must be at least 1, got {self.rank}.")
        check_choice(self.target, TARGETS, "target")
        check_choice(self.loss_region, LOSS_REGIONS, "loss_region")


@dataclass(frozen=True, eq=False)
class TrainingPair:
    """What the eps loss is computed on: a MODEL prepared by IDM-VTON Apply, its positive, the target latent, the loss weights."""

    model: object  # ModelPatcher with the try-on patches
    positive: list
    latent: torch.Tensor  # (1, 4, h, w): the person photo's VAE latent (unscaled; the sampling path scales it)
    weights: torch.Tensor | None  # (1, 1, h, w) loss weights (the mask), or None for the whole latent
    bank: ReferenceFeatureBank


@dataclass(frozen=True)
class CustomiseResult:
    model: object  # TryonNet + LoRA, without the try-on patches
    lora_name: str  # the file's name in the `loras` list (as LoraLoaderModelOnly lists it)
    loss_map: dict  # {"loss": [one float per step]}: the stock "Plot Loss Graph" node's input
    lora: DecoderLoRA


# --- inputs ------------------------------------------------------------------------------------------------------
def check_tryon_model(model) -> ReferenceFeatureBank:
    """The garment feature bank of a MODEL from IDM-VTON Apply; a clear error for any other MODEL."""
    base = getattr(model, "model", None)
    if base is None or not hasattr(getattr(base, "diffusion_model", None), "output_blocks"):
        raise TryOnInputError("model: expected the MODEL output of 'IDM-VTON Apply'.")
    if not hasattr(base, "ip_resampler"):
        raise TryOnInputError(
            "model: this MODEL is not IDM-VTON's TryonNet (an SDXL / GarmentNet MODEL?). Wire the `model` output of "
            "'IDM-VTON Apply', prepared on the person photo and its own garment."
        )
    bank = tryon_bank(model)
    if bank is None:
        raise TryOnInputError(
            "model: this TryonNet has not been prepared by 'IDM-VTON Apply'. Wire it into Apply's tryon_model (with the "
            "person photo, the mask of its garment and that garment's photo) and Apply's `model` output here."
        )
    if not isinstance(bank.spec.timing, EveryStep):
        raise TryOnInputError(
            "model: its Apply node uses the garment feature cache; customising runs GarmentNet at every training step's "
            "timestep. Set garment_feature_cache to 'off' on the Apply node that feeds this node."
        )
    if bank.inputs.latent.shape[0] != 1:
        raise TryOnInputError(f"model: prepared with {bank.inputs.latent.shape[0]} garments; customising takes one photo pair (batch 1).")
    sampling = model.get_model_object("model_sampling")
    table = getattr(sampling, "sigmas", None)
    if not isinstance(sampling, comfy.model_sampling.EPS) or isinstance(sampling, comfy.model_sampling.V_PREDICTION) or table is None or table.ndim != 1:
        raise TryOnInputError(
            "model: its model sampling is not discrete eps prediction (IDM-VTON's). Remove the model-sampling node between the TryonNet loader and this node."
        )
    return bank


def check_positive(positive) -> torch.Tensor:
    """TryonNet's 9 extra channels (1, 9, h, w) carried by the positive of IDM-VTON Apply."""
    concat = None
    if isinstance(positive, list) and positive and isinstance(positive[0], (list, tuple)) and len(positive[0]) > 1 and isinstance(positive[0][1], dict):
        concat = positive[0][1].get("tryon_concat")
    if not isinstance(concat, torch.Tensor):
        raise TryOnInputError(
            "positive: wire the `positive` output of the same 'IDM-VTON Apply' (it carries the mask, masked person and "
            "DensePose channels), not a CLIPTextEncode output."
        )
    if concat.shape[0] != 1:
        raise TryOnInputError(f"positive: prepared on {concat.shape[0]} persons; customising takes one photo pair (batch 1).")
    return concat


def target_latent(vae, person_image: torch.Tensor, concat: torch.Tensor) -> torch.Tensor:
    """The person photo's VAE latent at the try-on working size, checked against the size the pair was prepared at."""
    if vae is None or not hasattr(vae, "encode"):
        raise TryOnInputError("vae: connect the SDXL VAE (the one IDM-VTON Apply uses).")
    images = as_rgb(person_image, "person_image")
    if images.shape[0] != 1:
        raise TryOnInputError(f"person_image: a batch of {images.shape[0]} images; customising takes the one person photo of the pair.")
    height, width = working_size(*images.shape[1:3])
    expected = (concat.shape[-2] * LATENT_FACTOR, concat.shape[-1] * LATENT_FACTOR)
    if (height, width) != expected:
        raise TryOnInputError(
            f"person_image: {images.shape[2]}x{images.shape[1]} differs from the person photo the model was prepared on "
            f"({expected[1]}x{expected[0]}). Wire the same photo as the Apply node's person_image."
        )
    with torch.no_grad():
        return vae.encode(resize_image(images, height, width)).detach()


def prepare_pair(model, positive, vae, person_image: torch.Tensor, loss_region: str = LOSS_REGIONS[0]) -> TrainingPair:
    """The checked inputs of one customisation. Call it outside inference mode: the conditioning tensors are copied
    there, out of any autograd graph, so that layers may save them for backward."""
    bank = check_tryon_model(model)
    concat = check_positive(positive)
    latent = target_latent(vae, person_image, concat).clone()
    positive = [[entry[0].detach().clone(), _cloned(entry[1])] for entry in positive]
    weights = None
    if loss_region == "mask":
        weights = (concat[:, :1] >= 0.5).float()
        if float(weights.sum()) == 0:
            raise TryOnInputError("loss_region: the try-on mask is empty; use 'whole image' or a mask over the garment.")
    return TrainingPair(model, positive, latent, weights, bank)


# --- the eps of the model, through ComfyUI's sampling path ---------------------------------------------------------
def eps_loss(predicted: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between predicted and true noise in fp32, over the whole latent or weighted by `weights` (1, 1, h, w)."""
    error = (predicted.float() - noise.float()) ** 2
    if weights is None:
        return error.mean()
    weights = weights.to(error).expand_as(error)
    return (error * weights).sum() / weights.sum()


def with_eps_model(pair: TrainingPair, body: Callable[[EpsFunction], T]) -> T:
    """`body(eps)` inside one ComfyUI sampling run of `pair.model` (models loaded, conditioning prepared, the try-on
    wrappers active) and its result. `eps(t, noise)` is the model's predicted noise for the target latent noised to
    integer timestep t (sigma from the model's own table) with `noise`, conditional branch only (cfg 1, no uncond)."""
    model = pair.model.clone()
    captured: list[torch.Tensor] = []

    def capture_output(executor, *args, **kwargs):
        out = executor(*args, **kwargs)
        captured.append(out)
        return out

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, CAPTURE_KEY, capture_output)
    results: list = []

    class BodySampler(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False):
            sampling = model_wrap.inner_model.model_sampling

            def eps(t: int, noise: torch.Tensor) -> torch.Tensor:
                sigma = sampling.sigmas[int(t)].reshape(1).to(device=latent_image.device, dtype=torch.float32)
                x = sampling.noise_scaling(sigma, noise.to(latent_image), latent_image)
                captured.clear()
                model_wrap(x, sigma, **extra_args)
                if len(captured) != 1:
                    raise RuntimeError(f"{NODE_NAME}: expected one TryonNet call per evaluation, got {len(captured)}")
                return captured.pop()

            results.append(body(eps))
            return latent_image

    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds({"positive": pair.positive})
    guider.set_cfg(1.0)
    table = model.get_model_object("model_sampling").sigmas.float().cpu()
    sigmas = torch.cat([table.flip(0), table.new_zeros(1)])  # what other patches may read as the run's schedule
    guider.sample(torch.zeros_like(pair.latent), pair.latent, BodySampler(), sigmas, seed=0)
    return results[0]


def draw_timestep_and_noise(generator: torch.Generator, timesteps: int, shape: torch.Size) -> tuple[int, torch.Tensor]:
    """A timestep uniform over the model's `timesteps` and a standard normal noise of `shape`, from `generator` (CPU)."""
    t = int(torch.randint(0, timesteps, (1,), generator=generator))
    return t, torch.randn(shape, generator=generator, dtype=torch.float32)


# --- training --------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def frozen_weights(module: torch.nn.Module):
    """Every parameter of `module` usable as a frozen weight of a training graph while inside.

    Parameters loaded under `torch.inference_mode` (ComfyUI's executor) are inference tensors, which a layer cannot
    save for backward (and `p.data = copy` is refused for them): each is replaced, once and for good, by an ordinary
    copy of the same values. Parameters that require grad (a model built outside inference mode) are switched off
    inside, so no gradient reaches them, and switched back on exit. Every value stays bit-identical.
    """
    switched = []
    for name, parameter in list(module.named_parameters()):
        if parameter.is_inference():
            comfy.utils.set_attr_param(module, name, parameter.detach().clone())
        elif parameter.requires_grad:
            parameter.requires_grad_(False)
            switched.append(parameter)
    try:
        yield
    finally:
        for parameter in switched:
            parameter.requires_grad_(True)


def training_dtype(model) -> torch.dtype | None:
    """The compute dtype to train in when the model's own is unsuitable: fp16 (no loss scaling) -> bf16 or fp32."""
    dtype = model.model.manual_cast_dtype or model.model.get_dtype()
    if dtype == torch.float16:
        return torch.bfloat16 if comfy.model_management.should_use_bf16(model.load_device) else torch.float32
    return None


def training_memory(latent_shape: torch.Size, compute_dtype: torch.dtype, lora_parameters: int, checkpointing: bool) -> float:
    """Bytes to keep free beyond the weights while training (activations scaled from 1024x768, the LoRA and Adam)."""
    positions = latent_shape[-2] * latent_shape[-1] * latent_shape[0]
    activation_bytes = ACTIVATION_BYTES_1024x768[bool(checkpointing)] * positions / (128 * 96) * torch.finfo(compute_dtype).bits / 16
    return activation_bytes + lora_parameters * ADAM_BYTES_PER_PARAMETER


@contextlib.contextmanager
def training_session(pair: TrainingPair, lora: DecoderLoRA, checkpointing: bool):
    """Inside a sampling run (`with_eps_model`): trainable weights, the LoRA on its layers, the decoder checkpointed."""
    base = pair.model.model
    lora.to(pair.model.load_device)
    layers = checkpointable_layers(base.diffusion_model.output_blocks)
    with frozen_weights(base), lora.installed(), gradient_checkpointing(layers, checkpointing):
        yield


def backward_step(eps: EpsFunction, pair: TrainingPair, t: int, noise: torch.Tensor) -> torch.Tensor:
    """One forward and backward at (t, noise); the garment features live until the backward has run. Returns the loss."""
    with pair.bank.held_step():
        predicted = eps(t, noise)
        loss = eps_loss(predicted, noise.to(predicted.device), None if pair.weights is None else pair.weights.to(predicted.device))
        loss.backward()
    return loss.detach()


def train_decoder_lora(pair: TrainingPair, options: CustomiseOptions, on_step: Callable[[int, float], None] | None = None) -> tuple[DecoderLoRA, list[float]]:
    """Trains a fresh LoRA on the decoder of `pair.model` with Adam; returns it and the loss of every step.

    Checks ComfyUI's interrupt before every step; an interrupt or an error leaves every weight and patch as it was.
    """
    history: list[float] = []
    with torch.inference_mode(False), torch.enable_grad():
        base = pair.model.model
        lora = DecoderLoRA.create(base.diffusion_model, options.target, int(options.rank), int(options.seed))
        train_model = pair.model.clone()
        dtype = training_dtype(train_model)
        if dtype is not None:
            train_model.set_model_compute_dtype(dtype)
        compute_dtype = dtype or base.manual_cast_dtype or base.get_dtype()
        memory = training_memory(pair.latent.shape, compute_dtype, lora.parameter_count(), options.gradient_checkpointing)
        comfy.model_management.load_models_gpu([train_model], memory_required=memory, force_full_load=True)
        pair = TrainingPair(train_model, pair.positive, pair.latent, pair.weights, pair.bank)
        generator = torch.Generator().manual_seed(int(options.seed) % (2**63))
        timesteps = int(train_model.get_model_object("model_sampling").sigmas.shape[0])
        progress = comfy.utils.ProgressBar(int(options.steps))

        def train(eps: EpsFunction) -> None:
            with training_session(pair, lora, options.gradient_checkpointing):
                optimizer = torch.optim.Adam(lora.parameters(), lr=float(options.learning_rate))
                for step in range(int(options.steps)):
                    comfy.model_management.throw_exception_if_processing_interrupted()
                    t, noise = draw_timestep_and_noise(generator, timesteps, pair.latent.shape)
                    loss = float(backward_step(eps, pair, t, noise))
                    if not math.isfinite(loss):
                        raise RuntimeError(f"{NODE_NAME}: the loss became {loss} at step {step + 1}; lower learning_rate.")
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    history.append(loss)
                    progress.update(1)
                    if step == 0:
                        logging.info(TRAINING_STARTED, NODE_NAME, lora.rank, len(lora.layers), int(options.steps), loss)
                    if on_step is not None:
                        on_step(step, loss)

        with_eps_model(pair, train)
        for parameter in lora.parameters():
            parameter.requires_grad_(False)
    return lora, history


def _cloned(options: dict) -> dict:
    """A conditioning's options with its tensors copied outside inference mode (layers may save them for backward) and
    out of any autograd graph they came with."""
    return {key: value.detach().clone() if isinstance(value, torch.Tensor) else value for key, value in options.items()}


# --- the file ----------------------------------------------------------------------------------------------------------
def check_lora_name(lora_name: str) -> str:
    """The file stem to save under `loras` (subfolders allowed, '.safetensors' optional)."""
    name = (lora_name or "").strip()
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts) or os.path.isabs(name) or any(c in _FORBIDDEN_NAME_CHARS or ord(c) < 32 for c in name):
        raise TryOnInputError(
            f"lora_name: {lora_name!r} is not a usable file name. Use letters, digits, '-', '_' (and '/' for a subfolder of "
            "models/loras), e.g. 'idm_vton_customised'."
        )
    too_long = [part for part in parts if len(part.encode("utf-8")) > MAX_NAME_PART_BYTES]
    if too_long:
        raise TryOnInputError(
            f"lora_name: '{too_long[0][:40]}…' is {len(too_long[0].encode('utf-8'))} bytes long; file systems allow "
            f"255 per name and the number added takes 18. Use a name (and each subfolder) of at most {MAX_NAME_PART_BYTES}."
        )
    return os.path.join(*parts)


def check_lora_folder(stem: str) -> str:
    """The `loras` folder the LoRA will be written to, created and checked writable before training starts (a
    failure after hundreds of steps would waste them)."""
    folder = os.path.join(folder_paths.get_folder_paths("loras")[0], os.path.dirname(stem))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        problem = f"lora_name: cannot create the folder {folder} ({error.strerror})."
        raise TryOnInputError(f"{problem} Pick another subfolder, or fix the folder's permissions.") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TryOnInputError(f"lora_name: the folder {folder} is not writable. Fix its permissions, or pick another subfolder.")
    return folder


def model_fingerprint(model) -> str:
    """sha256 of TryonNet's 13-channel input convolution as loaded: tells which TryonNet (IDM-VTON or -DC) a LoRA was
    trained on. It hashes the weights in the dtype they were loaded in, so fp32, fp16 and fp8 loads differ."""
    weight = model.model.diffusion_model.input_blocks[0][0].weight.detach().float().cpu().contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()


def lora_metadata(pair: TrainingPair, options: CustomiseOptions, lora: DecoderLoRA, history: list[float]) -> dict[str, str]:
    height, width = pair.latent.shape[-2] * LATENT_FACTOR, pair.latent.shape[-1] * LATENT_FACTOR
    return {
        "format": "comfyui-tryon idm-vton customise lora 1",
        "base_model": "IDM-VTON TryonNet (SDXL, 13 input channels)",
        "base_model_conv_in_sha256": model_fingerprint(pair.model),
        "steps": str(int(options.steps)),
        "learning_rate": repr(float(options.learning_rate)),
        "rank": str(lora.rank),
        "alpha": repr(lora.alpha),
        "target": options.target,
        "loss_region": options.loss_region,
        "size": f"{width}x{height}",
        "seed": str(int(options.seed)),
        "gradient_checkpointing": str(bool(options.gradient_checkpointing)).lower(),
        "loss": json.dumps({"first": history[0], "last": history[-1]}) if history else "{}",
    }


def _write_error(path: str, error: OSError) -> TryOnInputError:
    return TryOnInputError(f"lora_name: writing {path} failed ({error.strerror or error}). Free disk space or fix the folder, then run again.")


def save_lora(tensors: dict[str, torch.Tensor], metadata: dict[str, str], stem: str) -> tuple[str, str]:
    """Writes `<stem>_00001.safetensors` (the first free number) in the first `loras` folder; never overwrites.

    Returns (path, name as the `loras` list shows it)."""
    folder = folder_paths.get_folder_paths("loras")[0]
    data = safetensors.torch.save(tensors, metadata=metadata)
    check_lora_folder(stem)
    for counter in itertools.count(1):
        path = os.path.join(folder, f"{stem}_{counter:05}.safetensors")
        try:
            file = open(path, "xb")  # "x": fails instead of overwriting, also against a concurrent writer
        except FileExistsError:
            continue
        except OSError as error:
            raise _write_error(path, error) from error
        try:
            with file:
                file.write(data)
        except OSError as error:  # e.g. the disk filled up: the partial file is ours (created above), so it goes
            os.remove(path)
            raise _write_error(path, error) from error
        return path, os.path.relpath(path, folder)
    raise AssertionError("unreachable")


def check_lora_keys(model, tensors: dict[str, torch.Tensor]) -> None:
    """Every key maps onto the model through ComfyUI's LoRA key map (else the stock loader would warn 'lora key not loaded')."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    unmapped = sorted({key.rsplit(".", 2)[0] if key.endswith(".weight") else key.rsplit(".", 1)[0] for key in tensors} - set(key_map))
    if unmapped:
        raise RuntimeError(f"{NODE_NAME}: LoRA layers ComfyUI cannot map onto TryonNet: {unmapped[:3]}")


def customised_model(model, tensors: dict[str, torch.Tensor]):
    """TryonNet without the try-on patches, plus the LoRA (the saved file's tensors) loaded by ComfyUI's own LoRA code,
    as LoraLoaderModelOnly loads the file."""
    return comfy.sd.load_lora_for_models(without_tryon_patches(model), None, tensors, 1.0, 0)[0]


def customise_idm_vton(
    model,
    positive,
    vae,
    person_image: torch.Tensor,
    steps: int = 100,
    learning_rate: float = 1e-4,
    rank: int = 16,
    target: str = TARGETS[0],
    loss_region: str = LOSS_REGIONS[0],
    seed: int = 0,
    gradient_checkpointing: bool = True,
    lora_name: str = DEFAULT_LORA_NAME,
    on_step: Callable[[int, float], None] | None = None,
) -> CustomiseResult:
    """Everything the Customise node outputs; `on_step(step, loss)` is called after every step (tests, benchmarks)."""
    options = CustomiseOptions(steps, learning_rate, rank, target, loss_region, seed, gradient_checkpointing)
    stem = check_lora_name(lora_name)
    check_lora_folder(stem)
    with torch.inference_mode(False):
        pair = prepare_pair(model, positive, vae, person_image, loss_region)
        lora, history = train_decoder_lora(pair, options, on_step)
    tensors = lora.state_dict(LORA_DTYPE)
    check_lora_keys(model, tensors)
    _, name = save_lora(tensors, lora_metadata(pair, options, lora, history), stem)
    logging.info("%s: %d steps, loss %.4f -> %.4f, LoRA saved as loras/%s", NODE_NAME, len(history), history[0], history[-1], name)
    return CustomiseResult(customised_model(model, tensors), name, {"loss": history}, lora)
