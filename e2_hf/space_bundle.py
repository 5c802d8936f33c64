"""`e2-hf build-space`: a folder ready to upload as a Gradio Space.

    e2-hf build-space --model NAME_OR_PATH --data SPEC [--data SPEC ...] --output DIR
    e2-hf build-space --model NAME_OR_PATH --index milvus://HOST:PORT#NAME --output DIR

Writes `DIR/app.py` (the Space app, `space/app.py`), `DIR/model/` (model and processor),
`DIR/index/` (the catalogs' embeddings and thumbnails, see `e2-hf index`), `DIR/e2_hf/` (a copy
of this package, so the Space needs no install of it), `requirements.txt` and the Space's
`README.md`. Upload with `hf upload --repo-type space USER/NAME DIR`.

With `--index` the Space searches a Milvus server's collection instead of a bundled index: its
address goes into `DIR/index.txt` (the token does not: give it as the Space's `MILVUS_TOKEN`
secret) and the `milvus` extra into the requirements.
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
{rows} products of its index by the whole image or by one entity's region.

Model: `{model}`. Built with `e2-hf build-space`.
"""


SPACE_EXTRAS = ("search",)  # the Space searches its bundled index with FAISS
STORE_ADDRESS_FILE = "index.txt"  # the address of the store a Space searches when it bundles none


def runtime_requirements(extras: tuple[str, ...] = SPACE_EXTRAS) -> list[str]:
    """e2-hf's own install requirements with those of `extras`; gradio comes with the Space SDK."""
    try:
        requirements = importlib.metadata.requires("e2-hf") or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("e2-hf is not installed (pip install .), so its requirements are unknown") from None
    needed = []
    for requirement in requirements:
        name, _, marker = requirement.partition(";")
        if not marker or any(f'extra == "{extra}"' in marker for extra in extras):
            needed.append(name.strip())
    return needed


def vendor_package(destination: Path) -> None:
    """Copies the importable e2_hf; links (a checkout's `e2_hf/modeling` -> `modeling/`) become real files."""
    shutil.copytree(Path(e2_hf.__file__).parent, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def build_space(model: str, data: list[str] | None, output: str | Path, title: str = "E2 fashion search",
                thumbnail_size: int = 128, batch_size: int = 64, store: str | None = None) -> Path:  # fmt: skip
    """The Space in `output`: with an index of the catalogs `data`, or searching the Milvus server
    collection `store`."""
    from .evaluation.embedding import load_for_inference

    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"{output} is not empty; give a new folder for the Space")
    if (data is None) == (store is None):
        raise ValueError("give the catalogs to bundle (--data) or a Milvus server's collection (--index)")
    if store:
        _check_server_address(store)
    requirements = runtime_requirements(SPACE_EXTRAS + (("milvus",) if store else ()))
    loaded, processor, device, dtype = load_for_inference(model, "cpu")
    if store:
        rows = _check_store(store, loaded, model)
    loaded.save_pretrained(output / "model")
    processor.save_pretrained(output / "model")
    if store:
        (output / STORE_ADDRESS_FILE).write_text(store + "\n", encoding="utf-8")
    else:
        rows = _bundle_index(output / "index", data, loaded, processor, model, thumbnail_size, batch_size, device,
                             dtype)  # fmt: skip
    shutil.copy2(Path(importlib.import_module("e2_hf.space").__file__).parent / "app.py", output / "app.py")
    vendor_package(output / "e2_hf")
    (output / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (output / "README.md").write_text(_space_card(title, portable_name(model), rows), encoding="utf-8")
    check_no_local_paths(output, f"the Space in {output}")
    return output


def _bundle_index(folder: Path, data: list[str], model, processor, model_name: str, thumbnail_size: int,
                  batch_size: int, device, dtype) -> int:  # fmt: skip
    from .search import add_catalog, open_or_create_index

    index = open_or_create_index(folder, model, portable_name(model_name), thumbnail_size)
    for spec in data:
        report = add_catalog(index, model, processor, spec, batch_size, device, dtype)
        print(f"{spec}: indexed {report.added} products")
    return len(index)


def _check_server_address(address: str) -> None:
    """A Space runs elsewhere, so its store is a Milvus server: not a folder here, nor a Milvus Lite
    file (open in one process, on this machine)."""
    from .search.milvus import LITE_PREFIX, is_milvus_address

    if not is_milvus_address(address) or address.startswith(LITE_PREFIX):
        raise ValueError(f"--index {address}: a Space searches a Milvus server (milvus://HOST:PORT or https://...); "
                         "to bundle an index folder, give its catalogs with --data")  # fmt: skip


def _check_store(address: str, model, model_name: str) -> int:
    """The rows of the Milvus server collection at `address`, checked to come from `model`."""
    from .search import model_fingerprint
    from .search.milvus import MilvusIndex

    with MilvusIndex(address) as store:
        store.check_model(model_fingerprint(model), model_name)
        return len(store)


def _space_card(title: str, model: str, rows: int) -> str:
    try:
        sdk_version = f"sdk_version: {importlib.metadata.version('gradio')}\n"
    except importlib.metadata.PackageNotFoundError:
        sdk_version = ""
    return SPACE_CARD.format(title=title, sdk_version=sdk_version, model=model, rows=rows)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="E2 model: Hub id or local folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", action="append", help="catalog to bundle as the search index; repeat for more")
    source.add_argument("--index", help="search this Milvus server collection instead (milvus://HOST:PORT#NAME); "
                                        "the token goes in the Space's MILVUS_TOKEN secret")  # fmt: skip
    parser.add_argument("--output", required=True, help="a new folder for the Space")
    parser.add_argument("--title", default="E2 fashion search")
    parser.add_argument("--thumbnail-size", type=int, default=128)
    return parser


def run(args: argparse.Namespace) -> None:
    output = build_space(args.model, args.data, args.output, args.title, args.thumbnail_size, store=args.index)
    print(f"Space in {output}; try it with `python {output / 'app.py'}`, publish it with "
          f"`hf upload --repo-type space USER/NAME {output}`")  # fmt: skip
