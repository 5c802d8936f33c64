"""Absolute local paths in what is about to be published, and names that do not carry them.

A published folder (a model repo, a Space) must not reveal the machine it was made on: a
`config.json` naming a data folder, a card whose base model is a temporary folder, an index whose
shards name the catalog's file by its full path. Everything uploaded is scanned after it is
rendered, text files whole and safetensors files by their JSON header (where metadata lives).
(Examples here are written without a leading slash, so that this file passes its own check.)
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

TEXT_SUFFIXES = (".json", ".jsonl", ".txt", ".md", ".py", ".yaml", ".yml", ".html", ".cfg", ".toml")
# A POSIX path of two or more parts starting at a slash that is not part of a URL, a relative path
# or an expression (`https://host/a/b`, `e2_hf/modeling`, `{root}/data/` do not match), a Windows
# drive path, or a path under the home folder's tilde.
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.:/~\-})\]$*])(/(?:[\w.\-]+/)+[\w.\-]*)"
    r"|(?<![\w])((?:[A-Za-z]:(?:\\\\|\\|/)|~/)[\w.\-]+)"
)


def absolute_paths_in(text: str) -> list[str]:
    """The absolute local paths mentioned in `text`, in order of appearance, without repeats."""
    found = [(first or second).rstrip(".") for first, second in ABSOLUTE_PATH.findall(text)]
    return list(dict.fromkeys(found))


def local_path_leaks(folder: str | Path) -> list[str]:
    """`"<file>: <path>"` for every absolute local path in the folder's files (recursively)."""
    folder = Path(folder)
    leaks = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        text = _searchable_text(path)
        leaks += [f"{path.relative_to(folder)}: {leak}" for leak in absolute_paths_in(text)]
    return leaks


def _searchable_text(path: Path) -> str:
    if path.name.endswith(TEXT_SUFFIXES):
        return path.read_text(encoding="utf-8", errors="ignore")
    if path.suffix == ".safetensors":
        with open(path, "rb") as handle:
            try:
                (length,) = struct.unpack("<Q", handle.read(8))
            except struct.error:
                return ""
            return handle.read(min(length, 100_000_000)).decode("utf-8", errors="ignore")
    return ""


def portable_name(name_or_path: str) -> str:
    """A Hub id as it is; a local path reduced to its last part (the folder or file name)."""
    if os.path.isabs(name_or_path) or os.path.exists(name_or_path):
        return Path(name_or_path).name or name_or_path
    return name_or_path


def portable_spec(spec: str) -> str:
    """A data spec with its path reduced to the file name (`jsonl:c.jsonl:train`)."""
    from .data import parse_spec

    kind, path, split = parse_spec(spec)
    return f"{kind}:{Path(path).name}" + (f":{split}" if split else "")


def check_no_local_paths(folder: str | Path, what: str) -> None:
    """Raises `ValueError` listing every absolute local path found in `folder`."""
    leaks = local_path_leaks(folder)
    if leaks:
        shown = "; ".join(leaks[:10]) + (f"; and {len(leaks) - 10} more" if len(leaks) > 10 else "")
        raise ValueError(f"{what} would publish absolute local paths: {shown}")
