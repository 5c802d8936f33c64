"""`e2-hf index` and `e2-hf search`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli_options import add_catalog_reading_arguments, add_dtype_argument
from .build import DEFAULT_THUMBNAIL_SIZE


def add_index_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", help="E2 model: Hub id or local folder (required to add)")
    parser.add_argument("--data", action="append",
                        help="data spec, e.g. jsonl:catalog.jsonl; repeat to add several catalogs")  # fmt: skip
    parser.add_argument("--output", required=True, help="index folder; an existing index is extended")
    parser.add_argument("--verify", action="store_true",
                        help="only check the index in --output: every shard against its recorded SHA-256")  # fmt: skip
    parser.add_argument("--skip-existing", action="store_true", help="leave out products already in the index")
    add_catalog_reading_arguments(parser)
    parser.add_argument("--thumbnail-size", type=int, default=DEFAULT_THUMBNAIL_SIZE, help="for a new index")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0, help="image-loading processes")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    add_dtype_argument(parser)
    return parser


def run_index(args: argparse.Namespace) -> None:
    from ..evaluation.embedding import load_for_inference
    from .build import add_catalog, open_or_create_index
    from .index import EmbeddingIndex, EmbeddingIndexError

    if args.verify:
        index = EmbeddingIndex(args.output)
        problems = index.verify()
        if problems:
            raise EmbeddingIndexError("the index is damaged:\n  " + "\n  ".join(problems))
        print(f"{args.output}: {len(index)} rows in {len(index.metadata['shards'])} shards, all checksums match")
        return
    if not args.model or not args.data:
        raise ValueError("adding to an index needs --model and --data (or pass --verify to check one)")

    model, processor, device, dtype = load_for_inference(args.model, args.device, args.dtype)
    index = open_or_create_index(args.output, model, args.model, args.thumbnail_size)
    for spec in args.data:
        report = add_catalog(index, model, processor, spec, args.batch_size, device, dtype, args.num_workers,
                             skip_existing=args.skip_existing, keep_html=args.keep_html,
                             tag_separators=args.tag_separators)  # fmt: skip
        skipped = f", {report.skipped_existing} already there" if report.skipped_existing else ""
        print(f"{spec}: added {report.added} products{skipped}; the index has {report.total}")
    print(f"index in {args.output}")


def add_search_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="the E2 model the index was built with")
    parser.add_argument("--index", required=True, help="index folder from e2-hf index")
    parser.add_argument("--query", required=True, help='text, e.g. "Gucci" or "black wool coat"')
    parser.add_argument("--entity", help="match this entity's regional embedding (default: the global one)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--output", required=True, help="FILE.png (image grid) or FILE.html (page)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    return parser


def untrained_entity_warning(model: str, index, entity: str) -> str | None:
    """Why a search by `entity`'s region may mean nothing: the model was trained without any tag of
    it (its `training_args.json` says so), or no indexed product has one."""
    record = Path(model) / "training_args.json"
    if record.is_file() and entity in json.loads(record.read_text(encoding="utf-8")).get("untagged_entities", []):
        return (f"{model} was trained on data without any {entity} tag: its {entity} region was never trained on "
                f"tags, so this ranking does not reflect {entity}")  # fmt: skip
    if not any(index.tag_values(entity)):
        return (f"no product in {index.folder} has a {entity} tag: nothing shows whether the {entity} region "
                f"matches the query")  # fmt: skip
    return None


def run_search(args: argparse.Namespace) -> None:
    from ..evaluation.embedding import load_for_inference
    from .index import EmbeddingIndex
    from .query import search_text
    from .render import results_format, write_results

    results_format(args.output)  # fail on a wrong file name before loading the model
    index = EmbeddingIndex(args.index)
    if args.entity is not None:
        index.entity_index(args.entity)  # fail on a wrong name before loading the model
        warning = untrained_entity_warning(args.model, index, args.entity)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    model, processor, _, _ = load_for_inference(args.model, args.device)
    hits = search_text(model, processor, index, args.query, args.entity, args.top_k)
    write_results(args.output, hits, index, args.query, args.entity)
    for hit in hits:
        print(f"#{hit.rank}  {hit.score:.3f}  {hit.item.product_id}  {hit.item.description[:70]}")
    print(f"wrote {args.output}")
