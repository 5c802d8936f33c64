"""`e2-hf build-space`: a folder ready to upload as a Gradio Space.

    e2-hf build-space --model NAME_OR_PATH --data SPEC [--data SPEC ...] --output DIR

Writes `DIR/app.py` (the Space app, `space/app.py`), `DIR/model/` (model and processor),
`DIR/index/` (the catalogs' embeddings and thumbnails, see `e2-hf index`), `DIR/e2_hf/` (a copy
of this package, so the Space needs no install of it), `requirements.txt` and the Space's
`README.md`. Upload with `hf upload --repo-type space USER/NAME DIR`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import shutil
from pathlib import Path

import e2_hf

from .local_paths import check_no_local_paths, portable_name

SPACE_CARD = """---
title: {title}
emoji: 👗
colorFrom: indigo
colorTo: pink
sdk: gradio
{sdk_version}app_file: app.py
pinned: false
---

# {title}

E2 ("Easy Regional Contrastive Learning of Expressive Fashion Representations", NeurIPS 2024) in
the browser: upload a product image to see the patches each tag entity's selection tokens chose
(beside the CLS token's attention) and its zero-shot tags per entity; type a query to search the
{rows} bundled products by the whole image or by one entity's region.

Model: `{model}`. Built with `e2-hf build-space`.
"""


SPACE_EXTRAS = ("search",)  # the Space searches its bundled index with FAISS


def runtime_requirements() -> list[str]:
    """e2-hf's own install requirements with the `search` extra's; gradio comes with the Space SDK."""
    try:
        requirements = importlib.metadata.requires("e2-hf") or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("e2-hf is not installed (pip install .), so its requirements are unknown") from None
    needed = []
    for requirement in requirements:
        name, _, marker = requirement.partition(";")
        if not marker or any(f'extra == "{extra}"' in marker for extra in SPACE_EXTRAS):
            needed.append(name.strip())
    return needed


def vendor_package(destination: Path) -> None:
    """Copies the importable e2_hf; links (a checkout's `e2_hf/modeling` -> `modeling/`) become real files."""
    shutil.copytree(Path(e2_hf.__file__).parent, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def build_space(model: str, data: list[str], output: str | Path, title: str = "E2 fashion search",
                thumbnail_size: int = 128, batch_size: int = 64) -> Path:  # fmt: skip
    from .evaluation.embedding import load_for_inference
    from .search import add_catalog, open_or_create_index

    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"{output} is not empty; give a new folder for the Space")
    requirements = runtime_requirements()
    loaded, processor, device, dtype = load_for_inference(model, "cpu")
    loaded.save_pretrained(output / "model")
    processor.save_pretrained(output / "model")
    index = open_or_create_index(output / "index", loaded, portable_name(model), thumbnail_size)
    for spec in data:
        report = add_catalog(index, loaded, processor, spec, batch_size, device, dtype)
        print(f"{spec}: indexed {report.added} products")
    shutil.copy2(Path(importlib.import_module("e2_hf.space").__file__).parent / "app.py", output / "app.py")
    vendor_package(output / "e2_hf")
    (output / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (output / "README.md").write_text(_space_card(title, portable_name(model), len(index)), encoding="utf-8")
    check_no_local_paths(output, f"the Space in {output}")
    return output


def _space_card(title: str, model: str, rows: int) -> str:
    try:
        sdk_version = f"sdk_version: {importlib.metadata.version('gradio')}\n"
    except importlib.metadata.PackageNotFoundError:
        sdk_version = ""
    return SPACE_CARD.format(title=title, sdk_version=sdk_version, model=model, rows=rows)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="E2 model: Hub id or local folder")
    parser.add_argument("--data", action="append", required=True, help="catalog to bundle as the search index")
    parser.add_argument("--output", required=True, help="a new folder for the Space")
    parser.add_argument("--title", default="E2 fashion search")
    parser.add_argument("--thumbnail-size", type=int, default=128)
    return parser


def run(args: argparse.Namespace) -> None:
    output = build_space(args.model, args.data, args.output, args.title, args.thumbnail_size)
    print(f"Space in {output}; try it with `python {output / 'app.py'}`, publish it with "
          f"`hf upload --repo-type space USER/NAME {output}`")  # fmt: skip
