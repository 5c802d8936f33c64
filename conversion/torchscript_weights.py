"""The tensors of a TorchScript archive, read without running any of its code.

`torch.jit.load` compiles the archive's TorchScript and runs each object's `__setstate__`, which
can do anything TorchScript can (write files, for one) before a single weight is checked. The
weights themselves need none of that: an archive is a zip whose `data.pkl` pickles the module tree
(each object's attributes, tensors as references to raw storages under `data/`). This module
unpickles that tree with a closed list of allowed globals, turns every scripted object into a
plain record of its state, and reads the storages' bytes directly.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

# Helpers the TorchScript pickler emits around lists and typed containers; all return their input.
TYPE_TAG_HELPERS = ("restore_type_tag", "build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")
# The pickler names a storage by its legacy class (`torch.FloatStorage`); only its dtype is used.
LEGACY_STORAGE_CLASSES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class ScriptedObject:
    """Stand-in for an instance of a TorchScript class: keeps the state it was pickled with."""

    type_name = "?"

    def __setstate__(self, state: Any) -> None:
        self.state = state


def is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archive's module tree, by dotted name (`visual.conv1.weight`)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path}: not a TorchScript archive (expected one <folder>/data.pkl, found {pickles}).")
        root = pickles[0].split("/")[0]
        with archive.open(pickles[0]) as stream:
            tree = _ArchiveUnpickler(stream, archive, root, path).load()
    tensors: dict[str, torch.Tensor] = {}
    _collect_tensors(tree, "", tensors)
    return tensors


class _ArchiveUnpickler(pickle.Unpickler):
    """Resolves only tensors, storages, ordered dicts and TorchScript class names (as records)."""

    def __init__(self, stream, archive: zipfile.ZipFile, root: str, path: Path):
        super().__init__(stream)
        self.archive, self.root, self.path = archive, root, path
        self.stand_ins: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return self._stand_in(f"{module}.{name}")
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in LEGACY_STORAGE_CLASSES:
            return LEGACY_STORAGE_CLASSES[name]
        if module == "torch.jit._pickle" and name in TYPE_TAG_HELPERS:
            return _first_argument
        raise pickle.UnpicklingError(
            f"{self.path}: refusing to read {module}.{name} from the archive; only module attributes and tensors "
            "are read from TorchScript files."
        )

    def persistent_load(self, reference: tuple) -> torch.Tensor:
        kind, dtype, key, _location, numel = reference
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"{self.path}: unexpected storage reference {reference!r}.")
        raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if flat.numel() < numel:
            raise ValueError(f"{self.path}: storage data/{key} holds {flat.numel()} values, {numel} expected.")
        return flat

    def _stand_in(self, type_name: str) -> type:
        if type_name not in self.stand_ins:
            self.stand_ins[type_name] = type("ScriptedObject", (ScriptedObject,), {"type_name": type_name})
        return self.stand_ins[type_name]


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    end = offset + sum((length - 1) * step for length, step in zip(size, stride)) + 1 if all(size) else offset
    if end > storage.numel():
        raise pickle.UnpicklingError(f"a tensor of size {tuple(size)} reaches past its storage ({storage.numel()}).")
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _first_argument(value, *_tags):
    return value


def _collect_tensors(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        tensors[name] = value
    elif isinstance(value, ScriptedObject):
        _collect_tensors(getattr(value, "state", None), name, tensors)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect_tensors(item, f"{name}.{key}" if name else str(key), tensors)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _collect_tensors(item, f"{name}.{index}" if name else str(index), tensors)
