"""`e2-hf index` and `e2-hf search`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..cli_options import add_catalog_reading_arguments, add_dtype_argument
from .engine import DEFAULT_THUMBNAIL_SIZE, INDEX_TYPES, STORAGE_DTYPES, SearchSettings

DEFAULT_SETTINGS = SearchSettings()


STORE_HELP = (
    "an index folder, or a Milvus store: milvus-lite:FILE.db, milvus://HOST:PORT or http(s)://... (token from "
    "MILVUS_TOKEN), optionally ending in #COLLECTION"
)


def add_index_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", help="E2 model: Hub id or local folder (required to add)")
    parser.add_argument("--data", action="append",
                        help="data spec, e.g. jsonl:catalog.jsonl; repeat to add several catalogs")  # fmt: skip
    parser.add_argument("--output", metavar="STORE", help=f"{STORE_HELP}; an existing index is extended")
    parser.add_argument("--migrate", nargs=2, metavar=("FROM", "TO"),
                        help="copy every row of the index FROM into a new index TO (folder to Milvus or back), "
                        "then check the row counts and a sample of vectors")  # fmt: skip
    parser.add_argument("--verify", action="store_true",
                        help="only check the index in --output: each shard and FAISS file against its "
                        "checksum")  # fmt: skip
    parser.add_argument("--rebuild", action="store_true",
                        help="recreate the FAISS indices of --output from its shards (with the --index-type and "
                        "search settings given, else the index's own)")  # fmt: skip
    parser.add_argument("--export-dataset", metavar="DIR",
                        help="write the index in --output as a Hugging Face dataset (Parquet) to DIR")  # fmt: skip
    parser.add_argument("--skip-existing", action="store_true", help="leave out products already in the index")
    add_catalog_reading_arguments(parser)
    parser.add_argument("--thumbnail-size", type=int, default=DEFAULT_THUMBNAIL_SIZE, help="for a new index")
    parser.add_argument("--storage-dtype", choices=STORAGE_DTYPES, default="float32",
                        help="for a new index: how shards and exact FAISS indices hold the vectors; float16 and "
                        "bfloat16 halve them (recall cost: BENCHMARKS.md, search at scale)")  # fmt: skip
    search = parser.add_argument_group("FAISS indices (a new index, or --rebuild)")
    search.add_argument("--index-type", choices=INDEX_TYPES,
                        help="auto (default): exact up to --exact-up-to rows, ivfpq beyond; flat: exact; hnsw: "
                        "approximate graph; ivfpq: approximate, compressed; diskann: a Milvus server's on-disk "
                        "graph")  # fmt: skip
    search.add_argument("--exact-up-to", type=int, help=f"auto's limit (default {DEFAULT_SETTINGS.exact_up_to})")
    search.add_argument("--hnsw-ef-search", type=int, help="hnsw, diskann: candidates per query (default "
                        f"{DEFAULT_SETTINGS.hnsw_ef_search})")  # fmt: skip
    search.add_argument(
        "--ivf-probes", type=int, help=f"ivfpq: lists per query (default {DEFAULT_SETTINGS.ivf_probes})"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0, help="image-loading processes")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    add_dtype_argument(parser)
    return parser


def search_settings(args: argparse.Namespace, base: SearchSettings) -> SearchSettings:
    """`base` with the search settings given on the command line."""
    given = {"index_type": args.index_type, "exact_up_to": args.exact_up_to,
             "hnsw_ef_search": args.hnsw_ef_search, "ivf_probes": args.ivf_probes}  # fmt: skip
    return SearchSettings(**{**base.to_json(), **{name: value for name, value in given.items() if value is not None}})


def launched_processes():
    """accelerate's `PartialState` when the command runs under `accelerate launch` or `torchrun`
    with more than one process; None otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch

    from ..extras import require

    accelerate = require("accelerate", "indexing with several processes")
    return accelerate.PartialState(cpu=not torch.cuda.is_available())


def run_index(args: argparse.Namespace) -> None:
    from .milvus import open_store

    if args.migrate:
        from .migrate import migrate

        if args.output or args.data:
            raise ValueError("--migrate FROM TO copies one index into another: give neither --output nor --data")
        report = migrate(*args.migrate, settings=search_settings(args, DEFAULT_SETTINGS))
        print(
            f"migrated {report.rows} rows from {args.migrate[0]} to {args.migrate[1]}; counts match and "
            f"{report.checked} sampled rows have the same vectors (largest difference {report.max_difference:.1e})"
        )
        return
    if not args.output:
        raise ValueError("give --output STORE (or --migrate FROM TO)")
    if not args.data:
        if not (args.verify or args.rebuild or args.export_dataset):
            raise ValueError("adding to an index needs --model and --data (or --verify, --rebuild or --export-dataset)")
        return _maintain_index(args, open_store(args.output))
    if args.verify or args.rebuild:
        raise ValueError("--verify and --rebuild work on the index as it is: run them without --data")
    if not args.model:
        raise ValueError("adding to an index needs --model")
    index, main = _add_to_index(args)
    if args.export_dataset and main:
        _maintain_index(args, index)


def _add_to_index(args: argparse.Namespace) -> tuple[Any, bool]:
    from ..evaluation.embedding import load_for_inference
    from .build import add_catalog, open_or_create_index
    from .milvus import open_store

    processes = launched_processes()
    main = processes is None or processes.is_main_process
    device = args.device or (str(processes.device) if processes is not None else None)
    model, processor, device, dtype = load_for_inference(args.model, device, args.dtype)
    if main:
        index = open_or_create_index(args.output, model, args.model, args.thumbnail_size, args.storage_dtype,
                                     search_settings(args, DEFAULT_SETTINGS))  # fmt: skip
    if processes is not None:
        processes.wait_for_everyone()  # the main process created the index
    if not main:
        index = open_store(args.output)
    for spec in args.data:
        report = add_catalog(index, model, processor, spec, args.batch_size, device, dtype, args.num_workers,
                             skip_existing=args.skip_existing, keep_html=args.keep_html,
                             tag_separators=args.tag_separators, processes=processes)  # fmt: skip
        skipped = f", {report.skipped_existing} already there" if report.skipped_existing else ""
        if main:
            print(f"{spec}: added {report.added} products{skipped}; the index has {report.total}")
    if main:
        print(f"index in {args.output}")
    if processes is not None:  # every process leaves together: none tears down a link another still reads
        processes.wait_for_everyone()
        processes.destroy_process_group()
    return index, main


def _maintain_index(args: argparse.Namespace, index) -> None:
    from .index import EmbeddingIndexError, writer_lock

    if index.folder is None and (args.verify or args.rebuild or args.export_dataset):
        raise EmbeddingIndexError(f"{args.output}: --verify, --rebuild and --export-dataset work on index folders; "
                                  "Milvus keeps its own indexes (migrate to a folder first to export)")  # fmt: skip
    if args.verify:
        problems = index.verify()
        if problems:
            raise EmbeddingIndexError("the index is damaged:\n  " + "\n  ".join(problems))
        files = len(index.metadata["shards"]) + len(index.metadata["search"]["files"])
        print(f"{args.output}: {len(index)} rows; all checksums match ({files} shard and FAISS files)")
    if args.rebuild:
        with writer_lock(index.folder):
            index.reload()
            done = index.commit_search_indices(rebuild=True, settings=search_settings(args, index.search_settings))
        print(f"{args.output}: FAISS indices rebuilt from {len(index)} rows ({'; '.join(done)})")
    if args.export_dataset:
        from .export import export_dataset

        export_dataset(index, args.export_dataset)
        print(f"dataset of {len(index)} rows in {args.export_dataset} (load it with datasets.load_dataset)")


def add_faiss_gpu_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faiss-gpu", action="store_true",
                        help="search on every GPU a GPU build of FAISS sees (exact float32 indices)")  # fmt: skip


def add_search_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="the E2 model the index was built with")
    parser.add_argument("--index", required=True, metavar="STORE", help=f"{STORE_HELP}, written by e2-hf index")
    queries = parser.add_mutually_exclusive_group(required=True)
    queries.add_argument("--query", help='text, e.g. "Gucci" or "black wool coat"')
    queries.add_argument("--image", help="a photo: find products like it (with --entity: whose region is like its)")
    queries.add_argument("--queries-file", metavar="FILE.jsonl",
                         help='one query a line: {"text": ...} or {"image": PATH}, optionally "entity" and "id"; '
                         "results go to --output FILE.jsonl, one line per query")  # fmt: skip
    parser.add_argument("--entity", help="match this entity's regional embedding (default: the global one)")
    parser.add_argument("--weights", metavar="TARGET=W,...", type=parse_weights,
                        help="one ranking from several targets, e.g. global=0.5,brand=0.5: the weighted sum of the "
                        "cosines (Milvus: hybrid_search); with --query or --image")  # fmt: skip
    parser.add_argument("--where", metavar="ENTITY=TAG", action="append",
                        help="only products whose ENTITY tag is TAG; repeat for more")  # fmt: skip
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--output", required=True, help="FILE.png (image grid), FILE.html (page) or FILE.jsonl")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    add_faiss_gpu_argument(parser)
    return parser


def parse_weights(text: str) -> dict[str | None, float]:
    """`"global=0.5,brand=0.5"` -> `{None: 0.5, "brand": 0.5}` (None: the global embedding)."""
    weights: dict[str | None, float] = {}
    for part in text.split(","):
        target, _, value = part.partition("=")
        try:
            weights[None if target.strip() == "global" else target.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: give TARGET=WEIGHT, e.g. global=0.5,brand=0.5") from None
    return weights


def parse_where(pairs: list[str] | None) -> dict[str, str]:
    where = {}
    for pair in pairs or []:
        entity, separator, tag = pair.partition("=")
        if not separator or not entity:
            raise ValueError(f"--where {pair!r}: give ENTITY=TAG, e.g. brand=Gucci")
        where[entity] = tag
    return where


def untrained_entity_warning(model: str, index, entity: str) -> str | None:
    """Why a search by `entity`'s region may mean nothing: the model was trained without any tag of
    it (its `training_args.json` says so), or no indexed product has one."""
    record = Path(model) / "training_args.json"
    if record.is_file() and entity in json.loads(record.read_text(encoding="utf-8")).get("untagged_entities", []):
        return (f"{model} was trained on data without any {entity} tag: its {entity} region was never trained on "
                f"tags, so this ranking does not reflect {entity}")  # fmt: skip
    if not index.has_tag(entity):
        return (f"no product in {index} has a {entity} tag: nothing shows whether the {entity} region "
                f"matches the query")  # fmt: skip
    return None


def run_search(args: argparse.Namespace) -> None:
    from ..evaluation.embedding import load_for_inference
    from .milvus import open_store
    from .query import SearchQuery, read_queries, run_queries, run_weighted
    from .render import results_format, write_results

    where = parse_where(args.where)
    if args.weights and (args.queries_file or args.entity):
        raise ValueError(
            "--weights ranks one --query or --image by several targets: give no --entity or --queries-file"
        )
    if args.queries_file:
        if not args.output.endswith(".jsonl"):
            raise ValueError(f"--queries-file writes JSON lines: --output must end in .jsonl, got {args.output}")
        queries = read_queries(args.queries_file, args.entity)
    else:
        results_format(args.output)  # fail on a wrong file name before loading the model
        queries = [SearchQuery(text=args.query, image=args.image, entity=args.entity)]
    index = open_store(args.index, faiss_gpu=args.faiss_gpu)
    targets = set(args.weights or {}) | {query.entity for query in queries} | set(where)
    for entity in sorted(target for target in targets if target is not None):
        index.entity_index(entity)  # fail on a wrong name before loading the model
        warning = untrained_entity_warning(args.model, index, entity)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    if args.faiss_gpu:  # fail on a missing GPU or a type FAISS cannot move before loading the model
        for entity in {query.entity for query in queries}:
            index.searcher(entity)
    model, processor, _, _ = load_for_inference(args.model, args.device)
    if args.weights:
        results = [run_weighted(model, processor, index, queries[0], args.weights, args.top_k, where)]
    else:
        results = run_queries(model, processor, index, queries, args.top_k, where)
    if args.queries_file:
        _write_jsonl(args.output, [{"query": query.to_json(), "hits": [hit.to_json() for hit in hits]}
                                   for query, hits in zip(queries, results)])  # fmt: skip
        print(f"{len(queries)} queries searched; wrote {args.output}")
        return
    query, hits = queries[0], results[0]
    write_results(args.output, hits, index, query.text or f"image {Path(query.image).name}", query.entity)
    for hit in hits:
        print(f"#{hit.rank}  {hit.score:.3f}  {hit.item.product_id}  {hit.item.description[:70]}")
    print(f"wrote {args.output}")


def _write_jsonl(path: str, records: list[dict[str, Any]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def add_compose_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="the model the index and the captioner were built with")
    parser.add_argument("--captioner", required=True, help="a captioner folder (e2-hf train-captioner) of --model")
    parser.add_argument("--index", required=True, metavar="STORE", help=f"{STORE_HELP}, written by e2-hf index")
    parser.add_argument("--image", required=True, help="the reference photo")
    parser.add_argument("--modify", required=True, help='the change asked for, e.g. "in FW2016" or "by Aurel"')
    parser.add_argument("--entity", help="search this entity's regional embeddings (default: the global one)")
    parser.add_argument("--rewriter", metavar="MODULE:FUNCTION",
                        help="a function (caption, modification) -> text, e.g. one that asks an LLM; imported and "
                        "run (default: the built-in rule-based rewriter on the index's tags)")  # fmt: skip
    parser.add_argument("--num-beams", type=int, default=1, help="beam search for the reference caption")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--output", required=True, help="FILE.png (image grid), FILE.html (page) or FILE.json")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    add_faiss_gpu_argument(parser)
    return parser


def run_compose(args: argparse.Namespace) -> None:
    from ..captioning.inference import load_captioner
    from ..evaluation.embedding import load_for_inference
    from .compose import compose_search, load_rewriter
    from .milvus import open_store
    from .render import results_format, write_results

    if not args.output.endswith(".json"):
        results_format(args.output)  # fail on a wrong file name before loading the model
    index = open_store(args.index, faiss_gpu=args.faiss_gpu)
    if args.entity is not None:
        index.entity_index(args.entity)
    if args.faiss_gpu:
        index.searcher(args.entity)
    rewriter = load_rewriter(args.rewriter) if args.rewriter else None
    model, processor, _, _ = load_for_inference(args.model, args.device)
    captioner = load_captioner(args.captioner, model)
    (result,) = compose_search(model, processor, captioner, index, [args.image], [args.modify], args.entity,
                               args.top_k, rewriter, args.num_beams, [f"--image {args.image}"])  # fmt: skip
    print(f"caption: {result.caption}\nsearched: {result.rewritten}")
    if args.output.endswith(".json"):
        Path(args.output).write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        write_results(args.output, result.hits, index, result.rewritten, args.entity)
    for hit in result.hits:
        print(f"#{hit.rank}  {hit.score:.3f}  {hit.item.product_id}  {hit.item.description[:70]}")
    print(f"wrote {args.output}")
