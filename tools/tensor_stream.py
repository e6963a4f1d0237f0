"""Tensor files one tensor at a time: lazy readers for safetensors and torch zip pickles, an incremental safetensors writer.

Used by the weight converter so that converting a 12 GB checkpoint never holds more than one tensor (plus its cast
copy) in memory. Pickles are only ever opened with `weights_only=True`; for torch zip archives the tensors' metadata
is read on the "meta" device and their bytes are then read straight from the file, so no storage is materialised
by the unpickler. The safetensors format (8-byte little-endian header length, a JSON header with dtype, shape and
data_offsets per tensor, then the raw bytes) is written header first, then tensor by tensor.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
SAFETENSORS_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024
READ_CHUNK = 64 * 1024 * 1024


class TensorFileError(Exception):
    """A tensor file that cannot be read safely (corrupt, truncated, unsafe pickle, unsupported format)."""


def tensor_nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of this dtype and shape takes, without making it."""
    numel = 1
    for size in shape:
        numel *= size
    return numel * dtype.itemsize


@dataclass(frozen=True)
class LazyTensor:
    """One tensor of a source file: its metadata now, its values on `load()`."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    load: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dtype, self.shape)


def _read_exact(path: str, offset: int, length: int) -> bytearray:
    """`length` bytes of `path` from `offset`, read into a fresh buffer (no memory map, so nothing stays resident)."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        done = 0
        while done < length:
            count = handle.readinto(view[done : done + READ_CHUNK])
            if not count:
                raise TensorFileError(f"{os.path.basename(path)} ends early (truncated download?).")
            done += count
    return buffer


def _tensor_from_bytes(buffer: bytearray, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if not buffer:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype).reshape(shape)


def read_safetensors_header(path: str) -> tuple[dict, int]:
    """The parsed JSON header of a .safetensors file and the file offset where its data starts."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise TensorFileError(f"{os.path.basename(path)} is too short to be a .safetensors file.")
        (length,) = struct.unpack("<Q", raw)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise TensorFileError(f"{os.path.basename(path)} is not a valid .safetensors file (header length {length}).")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TensorFileError(f"{os.path.basename(path)} has a corrupt .safetensors header ({error}).") from error
    if not isinstance(header, dict):
        raise TensorFileError(f"{os.path.basename(path)} has a corrupt .safetensors header.")
    return header, 8 + length


def safetensors_tensors(path: str) -> list[LazyTensor]:
    """The tensors of a .safetensors file, in file order, each read from disk only when loaded."""
    header, data_start = read_safetensors_header(path)
    size = os.path.getsize(path)
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as error:
            raise TensorFileError(f"{os.path.basename(path)}: unsupported or corrupt entry for '{name}' ({error}).") from error
        tensor = LazyTensor(name, dtype, shape, lambda o=data_start + begin, n=end - begin, d=dtype, s=shape: _tensor_from_bytes(_read_exact(path, o, n), d, s))
        if end - begin != tensor.nbytes or data_start + end > size:
            raise TensorFileError(f"{os.path.basename(path)}: '{name}' does not fit the file (truncated download?).")
        tensors.append(tensor)
    return tensors


def _unwrap_state_dict(loaded, path: str) -> dict:
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise TensorFileError(f"{os.path.basename(path)} does not hold a plain state dict of tensors.")
    return loaded


def _safe_torch_load(path: str, **kwargs):
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except Exception as error:  # unsafe pickles (weights_only refuses them), corrupt or truncated archives
        first_line = str(error).splitlines()[0][:300] if str(error) else ""
        raise TensorFileError(
            f"cannot read {os.path.basename(path)} as plain weights ({type(error).__name__}: {first_line}). The file is "
            "truncated, corrupt, or a pickle that needs code to load, which is refused for safety."
        ) from error


def _zip_is_little_endian(path: str) -> bool:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/byteorder") or n == "byteorder"]
        return not names or archive.read(names[0]).strip() == b"little"


def pickle_tensors(path: str) -> list[LazyTensor]:
    """The tensors of a torch .bin/.pth/.pt file, loaded with `weights_only=True`.

    Zip archives (torch >= 1.6) are unpickled on the "meta" device: shapes, dtypes and the file offset of every
    storage, no data. Each tensor's bytes are then read from its offset on demand. If this torch does not report
    storage offsets, the archive is memory-mapped instead (`mmap=True`); legacy non-zip pickles load fully.
    """
    if zipfile.is_zipfile(path) and sys.byteorder == "little" and _zip_is_little_endian(path):
        meta = _unwrap_state_dict(_safe_torch_load(path, map_location="meta"), path)
        if all(getattr(t.untyped_storage(), "_checkpoint_offset", None) is not None for t in meta.values()):
            return [_meta_lazy_tensor(path, name, tensor) for name, tensor in meta.items()]
        mapped = _unwrap_state_dict(_safe_torch_load(path, map_location="cpu", mmap=True), path)
    elif zipfile.is_zipfile(path):
        mapped = _unwrap_state_dict(_safe_torch_load(path, map_location="cpu", mmap=True), path)
    else:
        print(f"note: {os.path.basename(path)} is a legacy (non-zip) pickle; it is read into memory whole.", flush=True)
        mapped = _unwrap_state_dict(_safe_torch_load(path, map_location="cpu"), path)
    return [LazyTensor(name, t.dtype, tuple(t.shape), lambda t=t: t) for name, t in mapped.items()]


def _meta_lazy_tensor(path: str, name: str, meta: torch.Tensor) -> LazyTensor:
    storage = meta.untyped_storage()
    file_offset = storage._checkpoint_offset
    itemsize = meta.dtype.itemsize
    shape, stride, element_offset = tuple(meta.shape), meta.stride(), meta.storage_offset()
    if file_offset + storage.nbytes() > os.path.getsize(path):
        raise TensorFileError(f"{os.path.basename(path)}: '{name}' does not fit the file (truncated download?).")

    def load() -> torch.Tensor:
        numel = meta.numel()
        if numel == 0:
            return torch.empty(shape, dtype=meta.dtype)
        if meta.is_contiguous():
            return _tensor_from_bytes(_read_exact(path, file_offset + element_offset * itemsize, numel * itemsize), meta.dtype, shape)
        whole = _tensor_from_bytes(_read_exact(path, file_offset, storage.nbytes()), meta.dtype, (storage.nbytes() // itemsize,))
        return whole.as_strided(shape, stride, element_offset).contiguous()

    return LazyTensor(name, meta.dtype, shape, load)


def open_tensors(path: str) -> list[LazyTensor]:
    """Lazy tensors of a .safetensors or torch pickle file."""
    if path.endswith(".safetensors"):
        return safetensors_tensors(path)
    if path.endswith((".bin", ".pth", ".pt", ".ckpt")):
        return pickle_tensors(path)
    raise TensorFileError(f"{os.path.basename(path)}: expected a .safetensors or a torch .bin/.pth file.")


@dataclass(frozen=True)
class OutputTensor:
    """A tensor to write: metadata known up front, values produced when its turn comes."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    produce: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dtype, self.shape)


def safetensors_header(tensors: Iterable[OutputTensor], metadata: dict[str, str]) -> bytes:
    """Length prefix + JSON header (space-padded to 8 bytes), tensors laid out back to back in the given order."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for tensor in tensors:
        if tensor.dtype not in SAFETENSORS_NAMES:
            raise TensorFileError(f"'{tensor.name}': dtype {tensor.dtype} cannot be stored in .safetensors.")
        header[tensor.name] = {"dtype": SAFETENSORS_NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded


def write_safetensors(handle, tensors: list[OutputTensor], metadata: dict[str, str], progress: Callable[[int], None] | None = None) -> int:
    """Writes a .safetensors stream to `handle`, producing one tensor at a time; returns the bytes written."""
    if sys.byteorder != "little":
        raise TensorFileError("writing .safetensors needs a little-endian machine.")
    written = handle.write(safetensors_header(tensors, metadata))
    for tensor in tensors:
        values = tensor.produce()
        if values.dtype != tensor.dtype or tuple(values.shape) != tensor.shape:
            raise TensorFileError(f"'{tensor.name}': produced {values.dtype} {tuple(values.shape)}, announced {tensor.dtype} {tensor.shape}.")
        if tensor.nbytes:
            raw = values.contiguous().reshape(-1).view(torch.uint8).numpy()
            written += handle.write(memoryview(raw))
        del values
        if progress is not None:
            progress(tensor.nbytes)
    return written
