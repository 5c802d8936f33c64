"""What a real catalog export does to E2's inputs, before and after the readers' cleaning.

On the real sample-store catalog (`../shared/data/real_catalog`, 170 products, portrait studio
photos, HTML descriptions, multi-value attributes), with CLIP's real tokenizer (77-token context):
token lengths of the product texts with the HTML kept and cleaned, how many are truncated and by
how much; the distinct labels of the multi-value entities read as one label vs as values; and the
share of each photo CLIP's centre crop removes.

    python benchmarks/real_catalog.py [--catalog DIR] [--bpe FILE]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402
from report import heading, table  # noqa: E402

from e2_hf.data import open_catalog, truncation_report  # noqa: E402
from e2_hf.modeling import build_product_text  # noqa: E402
from e2_hf.tokenization import build_clip_tokenizer  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
SEPARATORS = {"season": "|", "composition": "|\n"}
CONTEXT = 77


def token_lengths(texts: list[str], tokenizer) -> dict[str, float]:
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    report = truncation_report(texts, tokenizer, CONTEXT)
    return {"median_tokens": statistics.median(lengths), "max_tokens": max(lengths), "texts": len(texts),
            "truncated": report.truncated, "median_tokens_cut": report.median_excess}  # fmt: skip


def crop_losses(image_paths: list[Path]) -> dict[str, object]:
    """Share of each photo's area (and of its long side) the square centre crop removes."""
    sizes = []
    for path in image_paths:
        with Image.open(path) as image:
            sizes.append(image.size)
    removed = [1 - min(width, height) / max(width, height) for width, height in sizes]
    return {"photos": len(sizes), "sizes": sorted({f"{w}x{h}" for w, h in sizes}),
            "removed_share_median": statistics.median(removed), "removed_share_max": max(removed)}  # fmt: skip


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--catalog", default=str(SHARED / "data" / "real_catalog"))
    arguments.add_argument("--bpe", default=str(SHARED / "data" / "bpe_simple_vocab_16e6.txt.gz"))
    args = arguments.parse_args()
    spec = f"jsonl:{Path(args.catalog) / 'catalog.jsonl'}"
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_clip_tokenizer(args.bpe, folder)
    texts = {}
    for name, keep_html in (("html_kept", True), ("cleaned", False)):
        catalog = open_catalog(spec, keep_html=keep_html)
        texts[name] = {
            "description_only": token_lengths([product.description for product in catalog.products], tokenizer),
            "product_text": token_lengths(
                [build_product_text(product.description, product.tags) for product in catalog.products], tokenizer
            ),
        }
    single, multi = open_catalog(spec), open_catalog(spec, tag_separators=SEPARATORS)
    labels = {
        entity: {
            "one_label_each": len({tag for tag in single.tag_values(entity) if tag}),
            "values": len({value for values in multi.value_sets(entity) for value in values}),
            "products_with_several_values": sum(len(values) > 1 for values in multi.value_sets(entity)),
        }
        for entity in SEPARATORS
    }
    untagged = single.untagged_entities(["brand", "season", "subcategory", "composition"])
    images = sorted((Path(args.catalog) / "images").glob("*.jpg"))
    write_result("real_catalog", {"setting": f"{spec} with CLIP's BPE tokenizer ({CONTEXT}-token context)",
                                  "texts": texts, "multi_value_labels": labels, "untagged_entities": untagged,
                                  "centre_crop": crop_losses(images)}, args.output)  # fmt: skip


# ---------------------------------------------------------------- its section of BENCHMARKS.md
def render(result: dict) -> list[str]:
    """Token lengths with the HTML kept and cleaned, multi-value labels, what the centre crop removes."""
    headers = ["texts", "text", "median tokens", "longest", "truncated at 77", "median tokens cut"]
    rows = []
    for reading, kinds in result["texts"].items():
        for kind, row in kinds.items():
            rows.append([reading.replace("_", " "), kind.replace("_", " "), f"{row['median_tokens']:g}",
                         str(row["max_tokens"]), f"{row['truncated']} of {row['texts']}",
                         str(row["median_tokens_cut"])])  # fmt: skip
    label_rows = [[entity, str(row["one_label_each"]), str(row["values"]), str(row["products_with_several_values"])]
                  for entity, row in result["multi_value_labels"].items()]  # fmt: skip
    crop = result["centre_crop"]
    return [
        *heading("A real catalog export: texts, multi-value tags, photo framing", result["setting"]),
        *table(headers, rows),
        "",
        *table(
            [
                "entity",
                "distinct labels, one per product",
                "distinct values (--tag-separator)",
                "products with several values",
            ],
            label_rows,
        ),  # fmt: skip
        "",
        f"Entities without any tag: {', '.join(result['untagged_entities']) or 'none'}. CLIP's square centre crop "
        f"removes {100 * crop['removed_share_median']:.1f}% (median; at most {100 * crop['removed_share_max']:.1f}%) "
        f"of each of the {crop['photos']} photos ({', '.join(crop['sizes'])}): the top and bottom of a portrait shot.",
        "",
    ]


if __name__ == "__main__":
    main()
