"""Memory-mapped, read-only views of the tensors in a safetensors file.

The format is an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
shape and byte range, then the raw data; so each tensor maps straight onto a `numpy.memmap`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}  # fmt: skip


def memory_map(path: str | Path) -> dict[str, np.memmap]:
    """`{name: read-only memmap}` for every tensor of the file (the `__metadata__` entry is skipped).
    A garbage or truncated header, or a tensor reaching past the end of the file, is a ValueError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            if header_length > size - 8:
                raise ValueError(f"header length {header_length} exceeds the file's {size} bytes")
            header = json.loads(handle.read(header_length))
    except FileNotFoundError:
        raise FileNotFoundError(f"index shard {path} is missing") from None
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a readable safetensors file (its header is not a JSON object)")
    data_start = 8 + header_length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = _tensor_layout(path, name, info)
        if data_start + end > size:
            raise ValueError(f"{path}: tensor {name} reaches byte {data_start + end}, the file has {size} (truncated)")
        if begin == end:  # an empty tensor: nothing to map
            tensors[name] = np.zeros(shape, dtype=dtype)
            continue
        tensors[name] = np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)
    return tensors


def _tensor_layout(path: Path, name: str, info: Any) -> tuple[type, tuple[int, ...], tuple[int, int]]:
    """`(numpy dtype, shape, (begin, end))` of one header entry, checked for consistency."""
    try:
        dtype, shape, (begin, end) = NUMPY_DTYPES[info["dtype"]], tuple(info["shape"]), info["data_offsets"]
        valid = all(isinstance(value, int) and value >= 0 for value in (*shape, begin, end))
    except (KeyError, TypeError, ValueError):
        dtype, valid = None, False
    if dtype is None and isinstance(info, dict) and info.get("dtype") not in NUMPY_DTYPES:
        raise ValueError(f"{path}: tensor {name} has dtype {info.get('dtype')}, which cannot be memory-mapped here")
    if not valid or end - begin != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
        raise ValueError(f"{path}: the header entry of tensor {name} is inconsistent: {info!r}")
    return dtype, shape, (begin, end)
