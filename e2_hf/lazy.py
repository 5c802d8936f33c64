"""Packages whose public names are imported on first use (PEP 562), so that importing one of their
light modules, e.g. a command's argument builder, does not import torch and transformers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose public name `name` lives in its submodule
    `exports[name]` (a relative name such as `.build`, or an absolute one)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(import_module(exports[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*import_module(package).__dict__, *exports})

    return __getattr__, __dir__
