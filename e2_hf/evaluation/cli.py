"""`e2-hf evaluate`: retrieval (full or sample-100), optionally region retrieval and linear probes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cli_options import add_catalog_reading_arguments, add_dtype_argument, print_notice


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="E2 (or CLIP-FT) model: Hub id or local folder")
    parser.add_argument("--data", required=True, help="data spec, e.g. fashiongen:fashiongen_256_256_validation.h5")
    parser.add_argument("--protocol", choices=("full", "sample100"), default="full")
    parser.add_argument("--queries", type=int, default=1000, help="sample100: random queries per seed")
    parser.add_argument("--seeds", type=int, default=5, help="sample100: seeds averaged")
    parser.add_argument("--output", help="write the metrics to this JSON file")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    add_dtype_argument(parser)
    parser.add_argument("--regions", action="store_true", help="also region retrieval per entity")
    add_catalog_reading_arguments(parser)
    parser.add_argument("--linear-probe", action="store_true", help="also linear-probe accuracy per entity")
    parser.add_argument(
        "--selection",
        action="store_true",
        help="also score where the selection tokens look, against the `details` boxes of a JSONL catalog "
        "(e2-hf make-synthetic writes them): hit rate, chance, position-only rate, collapse, interventions",
    )
    return parser


def report_catalog_texts(catalog, processor, data_spec: str) -> None:
    """One line on stderr when the product texts the evaluation embeds are longer than the model's context."""
    from ..data import ProductDataset, dataset_truncation

    texts = ProductDataset(catalog, processor.entities, training=False)  # the texts embed_catalog embeds
    print_notice(dataset_truncation(texts, processor).message(f"product texts of {data_spec}"))


def evaluate_catalog(args: argparse.Namespace) -> dict[str, Any]:
    from ..data import open_catalog, untagged_entities_notice
    from .embedding import embed_catalog, embed_texts, load_for_inference
    from .entities import linear_probe_accuracy, region_retrieval_metrics, tag_value_matrix
    from .retrieval import retrieval_metrics, sample100_metrics

    model, processor, device, dtype = load_for_inference(args.model, args.device, args.dtype)
    catalog = open_catalog(args.data, keep_html=args.keep_html, tag_separators=args.tag_separators)
    report_catalog_texts(catalog, processor, args.data)
    embeddings = embed_catalog(model, processor, catalog, args.batch_size, device, dtype)
    images, texts, catalog = embeddings.image_embeds, embeddings.text_embeds, embeddings.catalog
    if args.protocol == "full":
        results: dict[str, Any] = {"full": retrieval_metrics(images, texts)}
    else:
        subcategories = [product.tags.get("subcategory") or "" for product in catalog.products]
        results = {"sample100": sample100_metrics(images, texts, subcategories, queries=args.queries, seeds=args.seeds)}
    if args.regions and embeddings.region_embeds is not None:
        print_notice(
            untagged_entities_notice(
                catalog,
                embeddings.entities,
                args.data,
                "left out of the region metrics (no tag to score its region against)",
            )
        )
        results["region"] = {}
        for index, entity in enumerate(embeddings.entities):
            names, carried = tag_value_matrix(catalog.value_sets(entity))
            if names:
                tag_embeds = embed_texts(model, processor, names, device=device)
                results["region"][entity] = region_retrieval_metrics(
                    embeddings.region_embeds[:, index], tag_embeds, carried
                )
    if args.linear_probe:
        entities = embeddings.entities or ["brand", "season", "subcategory", "composition"]
        results["linear_probe"] = {
            entity: linear_probe_accuracy(images, catalog.tag_values(entity))
            for entity in entities
            if sum(tag is not None for tag in catalog.tag_values(entity)) >= 10
        }
    if args.selection:
        results["selection"] = _selection(model, processor, args.data)
    return results


def _selection(model, processor, data_spec: str) -> dict[str, Any]:
    from ..data import parse_spec
    from .selection import selection_metrics

    kind, path, split = parse_spec(data_spec)
    if kind != "jsonl":
        raise ValueError(
            f"--selection needs a JSONL catalog with `details` boxes (jsonl:FILE[:SPLIT]), got {data_spec}"
        )
    return selection_metrics(model, processor, path, split)


def metrics_table(results: dict[str, Any]) -> str:
    from .retrieval import DIRECTIONS

    lines = ["| protocol | direction | R@1 | R@5 | R@10 |", "| --- | --- | ---: | ---: | ---: |"]
    for protocol in ("full", "sample100"):
        if protocol in results:
            for direction in DIRECTIONS:
                row = results[protocol][direction]
                lines.append(f"| {protocol} | {direction} | {row['R@1']:.2f} | {row['R@5']:.2f} | {row['R@10']:.2f} |")
            lines.append(f"| {protocol} | SumR | {results[protocol]['sumr']:.2f} | | |")
    for entity, row in results.get("region", {}).items():
        for direction in ("image_to_tag", "tag_to_image"):
            cells = " | ".join(f"{row[direction][k]:.2f}" for k in ("R@1", "R@5", "R@10"))
            lines.append(f"| region {entity} | {direction} | {cells} |")
    for entity, row in results.get("linear_probe", {}).items():
        lines.append(f"| linear probe | {entity} | {row['accuracy']:.2f} (accuracy) | | |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    results = evaluate_catalog(args)
    print(metrics_table(results))
    if "selection" in results:
        from .selection import intervention_table, selection_table

        print("\nSelection, last fusion block (percent of views):")
        print(selection_table(results["selection"]))
        if results["selection"]["interventions"]:
            print(intervention_table(results["selection"]))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
