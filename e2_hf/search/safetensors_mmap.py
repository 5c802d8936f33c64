"""Memory-mapped, read-only views of the tensors in a safetensors file.

The format is an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
shape and byte range, then the raw data; so each tensor maps straight onto a `numpy.memmap`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}  # fmt: skip


def memory_map(path: str | Path) -> dict[str, np.memmap]:
    """`{name: read-only memmap}` for every tensor of the file (the `__metadata__` entry is skipped)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_length))
    except FileNotFoundError:
        raise FileNotFoundError(f"index shard {path} is missing") from None
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a safetensors file ({error})") from None
    data_start = 8 + header_length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in NUMPY_DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, which cannot be memory-mapped here")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if begin == end:  # an empty tensor: nothing to map
            tensors[name] = np.zeros(shape, dtype=NUMPY_DTYPES[info["dtype"]])
            continue
        tensors[name] = np.memmap(path, dtype=NUMPY_DTYPES[info["dtype"]], mode="r", offset=data_start + begin,
                                  shape=shape)  # fmt: skip
    return tensors
