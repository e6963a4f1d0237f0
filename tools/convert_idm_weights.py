"""Convert IDM-VTON's UNet weights into one half-precision .safetensors file that the pack's loaders read.

    python tools/convert_idm_weights.py SRC DST [--kind auto|tryon|garment] [--dtype fp16|bf16|fp32]

SRC is IDM-VTON's `unet/diffusion_pytorch_model.bin` (TryonNet, 12 GB fp32 pickle) or
`unet_encoder/diffusion_pytorch_model.safetensors` (GarmentNet, 10.3 GB fp32), or a Hugging Face folder holding
`unet/` or `unet_encoder/`. DST is the new .safetensors file (or an existing folder: a default name is used).

- Safe: pickles load with `weights_only=True` only; no code in a file ever runs.
- Streaming: one tensor at a time is read, cast and written, so memory stays near the largest tensor (tens of MB);
  a 16 GB RAM machine converts the 12 GB file.
- Verified: the key names must be exactly IDM-VTON's layout (1871 TryonNet keys; 1676 GarmentNet keys plus 4 unused
  `add_embedding.*` keys, which are dropped). Anything else is refused with what differs.
- Never overwrites: an existing DST is refused (exit code 2). The output is written to a hidden temporary file in
  DST's folder and renamed at the end, so an interrupted run leaves no half file under DST's name.

Exit codes: 0 done, 1 the source cannot be converted (unreadable, unsafe, wrong layout, no space), 2 refused (DST
exists, bad arguments).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import pathlib
import shutil
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from tensor_stream import LazyTensor, OutputTensor, TensorFileError, open_tensors, write_safetensors  # noqa: E402

OUT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
STRAY_GARMENT_KEYS = tuple(f"add_embedding.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias"))
REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1] / "models" / "layouts" / "idm_vton_hf_layout"


@dataclass(frozen=True)
class Layout:
    """IDM-VTON's exact key layout of one UNet: count, digest of the sorted names, per-part counts, input channels."""

    kind: str
    title: str
    folder: str
    key_count: int
    names_sha256: str
    part_counts: dict[str, int]
    in_channels: int
    reference_file: str


LAYOUTS = {
    "tryon": Layout(
        "tryon",
        "TryonNet",
        "unet",
        1871,
        "2f801dd7a5be17a5546a301a091caa46f5062a10f4faf4da5780de154683f821",
        {
            "conv_in": 2,
            "time_embedding": 4,
            "encoder_hid_proj": 51,
            "add_embedding": 4,
            "down_blocks.0": 22,
            "down_blocks.1": 124,
            "down_blocks.2": 474,
            "mid_block": 246,
            "up_blocks.0": 716,
            "up_blocks.1": 188,
            "up_blocks.2": 36,
            "conv_norm_out": 2,
            "conv_out": 2,
        },
        13,
        "unet.keys.tsv",
    ),
    "garment": Layout(
        "garment",
        "GarmentNet",
        "unet_encoder",
        1676,
        "7623ce3a212ead8a177bef057cf1194f824dbf60cdf5934fc21923d3327516d9",
        {
            "conv_in": 2,
            "time_embedding": 4,
            "down_blocks.0": 22,
            "down_blocks.1": 116,
            "down_blocks.2": 434,
            "mid_block": 226,
            "up_blocks.0": 656,
            "up_blocks.1": 176,
            "up_blocks.2": 36,
            "conv_norm_out": 2,
            "conv_out": 2,
        },
        4,
        "unet_encoder.keys.tsv",
    ),
}
DEFAULT_NAMES = {"tryon": "IDM-VTON-TryonNet-{dtype}.safetensors", "garment": "IDM-VTON-GarmentNet-{dtype}.safetensors"}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class ConversionError(Exception):
    """A conversion that must stop, with the message for the user and the process exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def names_digest(names) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8")).hexdigest()


def part_of(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] in ("down_blocks", "up_blocks") else parts[0]


def matches(layout: Layout, names: list[str]) -> bool:
    kept = [n for n in names if not (layout.kind == "garment" and n in STRAY_GARMENT_KEYS)]
    return len(kept) == layout.key_count and names_digest(kept) == layout.names_sha256


def describe_mismatch(layout: Layout, tensors: list[LazyTensor]) -> str:
    """What differs from `layout`, in words an artist can act on."""
    names = [t.name for t in tensors if not (layout.kind == "garment" and t.name in STRAY_GARMENT_KEYS)]
    lines = [f"{len(names)} tensors, {layout.title} has {layout.key_count}."]
    channels = conv_in_channels(tensors)
    if channels != layout.in_channels:
        lines.append(f"  conv_in takes {channels} input channels, {layout.title} takes {layout.in_channels}")
    if any(n.startswith(("model.diffusion_model.", "diffusion_model.")) for n in names):
        lines.append(
            "It is a ComfyUI/LDM-format checkpoint, not IDM-VTON's diffusers-format UNet; "
            "an SDXL checkpoint needs no conversion (load it with ComfyUI's checkpoint loader)."
        )
    found = collections.Counter(part_of(n) for n in names)
    for part in sorted(set(found) | set(layout.part_counts)):
        if found.get(part, 0) != layout.part_counts.get(part, 0):
            lines.append(f"  {part}: {found.get(part, 0)} tensors, expected {layout.part_counts.get(part, 0)}")
    reference = REFERENCE_DIR / layout.reference_file
    if reference.is_file():  # the key lists ship with the pack (models/layouts/)
        expected = {line.split("\t")[0] for line in reference.read_text().splitlines() if line.strip()}
        missing, unexpected = sorted(expected - set(names)), sorted(set(names) - expected)
        if missing:
            lines.append(f"  missing e.g. {', '.join(missing[:3])}")
        if unexpected:
            lines.append(f"  unexpected e.g. {', '.join(unexpected[:3])}")
    return "\n".join(lines[:20])


def conv_in_channels(tensors: list[LazyTensor]):
    conv_in = next((t for t in tensors if t.name == "conv_in.weight"), None)
    return conv_in.shape[1] if conv_in is not None and len(conv_in.shape) == 4 else None


def detect_layout(tensors: list[LazyTensor], kind: str, source: str) -> Layout:
    """The layout the source has (key names and input channels), checked against the requested kind; refuses anything else."""
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ConversionError(f"{source}: duplicate tensor names; the file is corrupt.")
    channels = conv_in_channels(tensors)
    found = next((layout for layout in LAYOUTS.values() if matches(layout, names) and channels == layout.in_channels), None)
    if kind != "auto" and found is not None and found.kind != kind:
        raise ConversionError(f"{source} is IDM-VTON's {found.title} ({found.folder}/), not {LAYOUTS[kind].title}. Use --kind {found.kind} (or --kind auto).")
    if found is None:
        wanted = [LAYOUTS[kind]] if kind != "auto" else list(LAYOUTS.values())
        details = "\n".join(f"Compared with {layout.title} ({layout.folder}/): {describe_mismatch(layout, tensors)}" for layout in wanted)
        raise ConversionError(f"{source} is not IDM-VTON's {' or '.join(layout.title for layout in wanted)} layout, so it is not converted.\n{details}")
    return found


def resolve_source(src: pathlib.Path, kind: str) -> pathlib.Path:
    """A weight file: SRC itself, or the unet/ or unet_encoder/ weights inside a Hugging Face folder."""
    if src.is_file():
        return src
    if not src.is_dir():
        raise ConversionError(f"source not found: {src}")
    folders = [LAYOUTS[kind].folder] if kind != "auto" else [layout.folder for layout in LAYOUTS.values()]
    candidates = [src / folder / name for folder in folders for name in WEIGHT_FILES if (src / folder / name).is_file()]
    candidates += [src / name for name in WEIGHT_FILES if (src / name).is_file()]
    by_folder = {}
    for path in candidates:
        by_folder.setdefault(path.parent, path)  # .safetensors before .bin in the same folder
    if len(by_folder) > 1:
        raise ConversionError(
            f"{src} holds several UNets ({', '.join(str(p) for p in by_folder.values())}). "
            "Choose one with --kind tryon or --kind garment, or pass the file itself.",
            exit_code=2,
        )
    if not by_folder:
        raise ConversionError(
            f"no diffusion_pytorch_model.bin/.safetensors found in {src} (looked in {', '.join(f + '/' for f in folders)} and the folder itself)."
        )
    return next(iter(by_folder.values()))


def resolve_destination(dst: pathlib.Path, kind: str, dtype: str) -> pathlib.Path:
    if dst.is_dir():
        dst = dst / DEFAULT_NAMES[kind].format(dtype=dtype)
    if dst.suffix != ".safetensors":
        raise ConversionError(f"output must be a .safetensors file name, got {dst}", exit_code=2)
    if dst.exists() or dst.is_symlink():
        raise ConversionError(f"refusing to overwrite existing {dst}. Delete it first or choose another name.", exit_code=2)
    if not dst.parent.is_dir():
        raise ConversionError(f"output folder does not exist: {dst.parent}", exit_code=2)
    return dst


def cast_tensor(tensor: LazyTensor, dtype: torch.dtype):
    """A producer of the converted tensor: floating tensors cast to `dtype` (refusing fp16 overflow), others kept."""

    def produce() -> torch.Tensor:
        values = tensor.load()
        if not values.is_floating_point() or values.dtype == dtype:
            return values
        converted = values.to(dtype)
        if torch.isinf(converted).any() and not torch.isinf(values).any():
            raise ConversionError(f"'{tensor.name}' has values beyond {dtype}'s range; use --dtype bf16 or fp32.")
        return converted

    return produce


class Progress:
    """Prints a line at every 5% of the bytes written."""

    def __init__(self, total: int):
        self.total, self.done, self.next_step, self.start = max(total, 1), 0, 5, time.monotonic()

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        percent = 100 * self.done // self.total
        if percent >= self.next_step:
            elapsed = time.monotonic() - self.start
            print(f"  {percent:3d}%  {self.done / 1e9:6.2f} / {self.total / 1e9:.2f} GB  {elapsed:6.1f} s", flush=True)
            self.next_step = percent - percent % 5 + 5


def publish(temporary: pathlib.Path, dst: pathlib.Path) -> None:
    """Moves the finished file to DST without ever replacing an existing file."""
    try:
        os.link(temporary, dst)  # fails if dst exists: no race with another writer
    except FileExistsError as error:
        raise ConversionError(f"refusing to overwrite {dst}: it appeared while converting. The conversion is discarded.", exit_code=2) from error
    except OSError:  # file systems without hard links
        if dst.exists():
            raise ConversionError(f"refusing to overwrite {dst}: it appeared while converting.", exit_code=2) from None
        os.rename(temporary, dst)
        return
    temporary.unlink()


def convert(src: pathlib.Path, dst: pathlib.Path, kind: str = "auto", dtype: str = "fp16") -> pathlib.Path:
    """Converts one IDM-VTON UNet weight file; returns the path written."""
    source = resolve_source(src, kind)
    print(f"reading {source}", flush=True)
    try:
        tensors = open_tensors(str(source))
    except TensorFileError as error:
        raise ConversionError(str(error)) from error
    layout = detect_layout(tensors, kind, source.name)
    dst = resolve_destination(dst, layout.kind, dtype)
    kept = [t for t in tensors if not (layout.kind == "garment" and t.name in STRAY_GARMENT_KEYS)]
    out_dtype = OUT_DTYPES[dtype]
    outputs = [OutputTensor(t.name, out_dtype if t.dtype.is_floating_point else t.dtype, t.shape, cast_tensor(t, out_dtype)) for t in kept]
    total = sum(t.nbytes for t in outputs)
    free = shutil.disk_usage(dst.parent).free
    if free < total + (1 << 20):
        raise ConversionError(f"not enough disk space in {dst.parent}: {total / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free.")
    print(
        f"{layout.title} layout verified: {len(kept)} tensors"
        f"{f' (dropping the {len(tensors) - len(kept)} unused add_embedding tensors)' if len(kept) != len(tensors) else ''}; "
        f"writing {total / 1e9:.2f} GB {dtype} to {dst}",
        flush=True,
    )
    metadata = {
        "format": "pt",
        "idm_vton_part": layout.kind,
        "source_file": source.name,
        "dtype": dtype,
        "converted_by": "comfyui-tryon tools/convert_idm_weights.py",
    }
    temporary = dst.parent / f".{dst.name}.{os.getpid()}.partial"
    try:
        with open(temporary, "xb") as handle:
            write_safetensors(handle, outputs, metadata, Progress(total))
            handle.flush()
            os.fsync(handle.fileno())
        publish(temporary, dst)
    except TensorFileError as error:
        raise ConversionError(str(error)) from error
    except OSError as error:
        raise ConversionError(f"writing {dst} failed: {error}") from error
    finally:
        if temporary.exists():
            temporary.unlink()
    print(f"done: {dst} ({dst.stat().st_size / 1e9:.2f} GB)", flush=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Exit codes: 0 done, 1 source cannot be converted, 2 refused (output exists, bad arguments)."
    )
    parser.add_argument(
        "src",
        type=pathlib.Path,
        help="IDM-VTON's unet/diffusion_pytorch_model.bin, unet_encoder/"
        "diffusion_pytorch_model.safetensors, or a Hugging Face folder holding unet/ or unet_encoder/",
    )
    parser.add_argument("dst", type=pathlib.Path, help="the new .safetensors file, or an existing folder (default name)")
    parser.add_argument(
        "--kind",
        choices=("auto", "tryon", "garment"),
        default="auto",
        help="tryon = unet/ (TryonNet), garment = unet_encoder/ (GarmentNet); auto detects it from the keys",
    )
    parser.add_argument("--dtype", choices=tuple(OUT_DTYPES), default="fp16", help="storage dtype of the output (default fp16)")
    args = parser.parse_args(argv)
    try:
        convert(args.src, args.dst, args.kind, args.dtype)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing was written under the output name.", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
