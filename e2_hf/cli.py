"""The `e2-hf` command line: one subcommand per task (`e2-hf --help` lists them, `e2-hf --version`).

    e2-hf convert-original --checkpoint best.pth --output-dir DIR [--entities a,b,c,d] ...
    e2-hf count-params [--model NAME_OR_PATH] [--json FILE]

Only the module of the subcommand being run is imported (its arguments are built then), so
`e2-hf --help` and light commands do not pay for training, search or the Space.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from .choices import EXPORT_DTYPES, TAG_SOURCES
from .cli_options import add_catalog_reading_arguments
from .errors import TrainingError
from .extras import MissingExtraError


@dataclass(frozen=True)
class Command:
    """A subcommand: its help, and its argument builder and runner as `module:function` in `e2_hf`,
    each imported only when that subcommand is used. Argument builders import no torch, so every
    `--help` is fast; the runner imports what the command needs."""

    help: str
    arguments: str
    run: str

    @staticmethod
    def load(where: str) -> Callable:
        module, function = where.split(":")
        return getattr(import_module(f"e2_hf.{module}"), function)


def _make_synthetic(args: argparse.Namespace) -> None:
    from .synthetic import make_synthetic

    summary = make_synthetic(args.output_dir, products=args.products, seed=args.seed, views=args.views,
                             image_size=args.image_size, hard=args.hard, eval_fraction=args.eval_fraction,
                             brands=args.brands, logo_size=args.logo_size, framing=args.framing,
                             logo_colours=args.logo_colours, captions=args.captions)  # fmt: skip
    print(json.dumps(summary, indent=2))


def _add_make_synthetic(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--products", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=int, default=3, help="images per product")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--hard", action="store_true", help="products collide on all but logo and trim")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="share of products in validation")
    parser.add_argument("--brands", type=int, default=48, help="number of distinct brands (at most 48)")
    parser.add_argument("--logo-size", type=int, help="logo side in pixels, a multiple of 4 (default: size / 8)")
    parser.add_argument("--framing", choices=("tight", "varied"), default="tight",
                        help="varied: the garment's size and place vary, and so does the trim's position")  # fmt: skip
    parser.add_argument("--logo-colours", choices=("random", "palette"), default="random",
                        help="palette: saturated, well separated hues per brand instead of any RGB")  # fmt: skip
    parser.add_argument("--captions", choices=("product", "varied"), default="product",
                        help="varied: alt-text-like captions (a tag alone, a few words or the full text)")  # fmt: skip


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    report = run_demo(args.output_dir, quick=args.quick, base=args.base, seed=args.seed)
    print((Path(args.output_dir) / "report.md").read_text())
    print(f"done in {report['seconds']['total']:.0f} s; models, report.json and selection.png in {args.output_dir}")


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--quick", action="store_true", help="a smaller run for smoke tests (under 2 minutes)")
    parser.add_argument(
        "--base",
        help="start from this CLIP (Hub id or folder), or 'random' for a small random CLIP "
        "(default: the small CLIP pretrained on a generic synthetic catalog that ships with the package)",
    )
    parser.add_argument("--seed", type=int, default=0)


def _count_params(args: argparse.Namespace) -> None:
    from .modeling import E2CLIPConfig
    from .parameters import count_for_config

    config = E2CLIPConfig.from_pretrained(args.model) if args.model else E2CLIPConfig()
    report = count_for_config(config)
    source = args.model or "E2 ViT-B/32 (default E2CLIPConfig)"
    print(
        f"{source}: entities {config.entities}, {config.num_selection_tokens} selection tokens, "
        f"fusion after layers {config.fusion_layers}"
    )
    print("\n".join(report.lines()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"model": source, **report.as_dict()}, handle, indent=2)


def _add_count_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="an E2 folder or Hub id (its config); default: ViT-B/32 E2")
    parser.add_argument("--json", help="also write the counts to this JSON file")


def _add_visualize(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="E2 model: Hub id or local folder")
    parser.add_argument("--image", action="append", required=True, help="an image file; repeat for more")
    parser.add_argument("--output", required=True, help="the figure, a .png file")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    return parser


def _add_tag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="E2 model: Hub id or local folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", action="append", help="tag this image; repeat for more")
    source.add_argument("--data", help="measure accuracy on this catalog (data spec), regional vs global")
    source.add_argument("--index", help="measure accuracy on an index's products from their stored embeddings: "
                                        "a folder, milvus-lite:FILE.db or milvus://HOST:PORT")  # fmt: skip
    add_catalog_reading_arguments(parser)
    parser.add_argument("--candidates", help="JSON file {entity: [tags]}, or a data spec or an index to take "
                                             "distinct tags from (default with --data, --index: its tags)")  # fmt: skip
    parser.add_argument("--entity", action="append", help="only these entities (default: all with candidates)")
    parser.add_argument("--top-k", type=int, default=3, help="--image: tags shown per entity")
    parser.add_argument("--source", choices=TAG_SOURCES, default="region", help="--image: embedding to score")
    parser.add_argument("--output", help="write the predictions or accuracies to this JSON file")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    return parser


def _add_export_onnx(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="an E2 folder or Hub id")
    parser.add_argument("--output-dir", required=True, help="a new folder: the model plus onnx/")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--dtype", choices=EXPORT_DTYPES, default="fp32", help="the graphs' floating-point type")
    parser.add_argument("--quantize", choices=("int8",), help="also write int8 graphs (dynamic quantisation)")
    parser.add_argument("--overwrite", action="store_true", help="export into a folder that is not empty")


COMMANDS: dict[str, Command] = {
    "convert-original": Command(
        "convert a checkpoint of the E2 authors' code to a Hub-ready folder",
        "conversion.cli:add_convert_original_arguments", "conversion.convert_original_e2:run",
    ),
    "init-from-clip": Command(
        'turn a CLIP checkpoint (transformers, OpenAI or open_clip files) into a Hub-ready E2 folder',
        "conversion.cli:add_init_from_clip_arguments", "conversion.convert_clip_to_e2:run",
    ),
    "push": Command(
        'validate a saved E2 folder, publish it to the Hub with a model card, and verify the upload',
        "conversion.cli:add_push_arguments", "conversion.push_to_hub:run",
    ),
    "make-synthetic": Command(
        'write a synthetic fashion catalog (FashionGen HDF5 + JSONL with PNGs)',
        "cli:_add_make_synthetic", "cli:_make_synthetic",
    ),
    "train": Command(
        'fine-tune E2 or the CLIP-FT baseline with Accelerate',
        "training.cli:add_arguments", "training.cli:run",
    ),
    "evaluate": Command(
        'retrieval metrics (full or sample-100), region retrieval and linear probes of a model on a catalog',
        "evaluation.cli:add_arguments", "evaluation.cli:run",
    ),
    "demo": Command(
        'synthetic catalog -> E2 and CLIP-FT trained on the same budget -> evaluated -> report',
        "cli:_add_demo", "cli:_demo",
    ),
    "count-params": Command(
        'print the parameters E2 adds to CLIP and their share',
        "cli:_add_count_params", "cli:_count_params",
    ),
    "visualize": Command(
        "draw the patches each entity's selection tokens chose, next to the CLS token's attention",
        "cli:_add_visualize", "visualization:run",
    ),
    "index": Command(
        "store a catalog's global and regional image embeddings in an index folder (or add to one)",
        "search.cli:add_index_arguments", "search.cli:run_index",
    ),
    "search": Command(
        "text search of an index by the global or one entity's regional embedding -> PNG grid or HTML",
        "search.cli:add_search_arguments", "search.cli:run_search",
    ),
    "compose-search": Command(
        'text-guided image retrieval: caption a reference photo, rewrite the caption with a change, search',
        "search.cli:add_compose_arguments", "search.cli:run_compose",
    ),
    "tag": Command(
        'zero-shot tags per entity from the regional embeddings; with --data, accuracy vs the global embedding',
        "cli:_add_tag", "tagging:run",
    ),
    "train-captioner": Command(
        "train a zero-shot captioner (CapDec or DeCap) on a frozen model's text embeddings of a catalog's texts",
        "captioning.cli:add_train_arguments", "captioning.cli:run_train",
    ),
    "caption": Command(
        "caption images, or a catalog's products with caption metrics and attribute accuracy",
        "captioning.cli:add_caption_arguments", "captioning.cli:run_caption",
    ),
    "export-onnx": Command(
        'export the image and text encoders to ONNX (onnx/ in a model folder), checked with ONNX Runtime',
        "cli:_add_export_onnx", "onnx_export:run",
    ),
    "build-space": Command(
        'lay out a Gradio Space: app, model, a bundled search index and a copy of e2_hf',
        "space_bundle:add_arguments", "space_bundle:run",
    ),
}  # fmt: skip


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand with its help; only `command`'s arguments are built (importing its module)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="e2-hf", description="E2 fashion representations for transformers")
    parser.add_argument("--version", action="version", version=f"e2-hf {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, spec in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=spec.help, description=spec.help)
        if name == command:
            spec.load(spec.arguments)(subparser)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    spec = COMMANDS[args.command]
    try:
        spec.load(spec.run)(args)
    except (ValueError, FileNotFoundError, OSError, TrainingError, MissingExtraError) as error:
        sys.exit(f"e2-hf {args.command}: error: {error}")


if __name__ == "__main__":
    main()
