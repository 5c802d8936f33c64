"""Benchmark 6: zero-shot tagging and entity-aware search on the synthetic catalog, regional vs global.

On the demo's models (E2 and CLIP-FT, trained on the same data and budget by `e2-hf demo`), every
validation product is tagged for each entity by the nearest candidate tag text among that entity's
distinct tags: with E2's regional embedding of the entity, with E2's global embedding, and with
CLIP-FT's global embedding. Top-1 accuracy in percent; the ratio regional / global is printed.
The same scores read the other way are a search: each tag text as a query, precision of its 10
best products (`e2_hf.tagging.search_precision`), mean over the tags.

    python benchmarks/bench_tagging.py [--demo-dir DIR]   # trains the demo there when DIR has no models
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402
from report import heading, table  # noqa: E402

from e2_hf.data import open_catalog  # noqa: E402
from e2_hf.demo import run_demo  # noqa: E402
from e2_hf.evaluation.embedding import embed_catalog, load_for_inference  # noqa: E402
from e2_hf.tagging import accuracy_table, catalog_candidates, tagging_accuracy  # noqa: E402

ENTITIES = ["brand", "season", "subcategory", "composition"]


def model_accuracy(model_dir: Path, spec: str, candidates: dict | None) -> dict:
    model, processor, device, dtype = load_for_inference(model_dir, "cpu")
    embeddings = embed_catalog(model, processor, open_catalog(spec), device=device, dtype=dtype)
    return tagging_accuracy(model, processor, embeddings, candidates, device)


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--demo-dir", help="an `e2-hf demo` output folder (default: a new temporary one)")
    args = arguments.parse_args()
    demo_dir = Path(args.demo_dir or tempfile.mkdtemp(prefix="e2-tagging-"))
    if not (demo_dir / "e2-model").is_dir():
        run_demo(demo_dir, quick=args.toy, seed=0)
    spec = f"jsonl:{demo_dir / 'catalog' / 'catalog.jsonl'}:validation"
    candidates = catalog_candidates(open_catalog(spec), ENTITIES)
    e2 = model_accuracy(demo_dir / "e2-model", spec, candidates)
    clip_ft = model_accuracy(demo_dir / "clip-ft-model", spec, candidates)
    print(accuracy_table(e2))
    per_entity = {
        entity: {
            "candidates": e2[entity]["candidates"],
            "items": e2[entity]["items"],
            "chance": e2[entity]["chance"],
            "e2_region": e2[entity]["region"],
            "e2_global": e2[entity]["global"],
            "clip_ft_global": clip_ft[entity]["global"],
            "search_precision_at_10": {
                "e2_region": e2[entity]["search_precision_at_10"]["region"],
                "e2_global": e2[entity]["search_precision_at_10"]["global"],
                "clip_ft_global": clip_ft[entity]["search_precision_at_10"]["global"],
            },
        }
        for entity in candidates
    }
    mean = {key: statistics.mean(row[key] for row in per_entity.values())
            for key in ("e2_region", "e2_global", "clip_ft_global", "chance")}  # fmt: skip
    mean_search = {key: statistics.mean(row["search_precision_at_10"][key] for row in per_entity.values())
                   for key in ("e2_region", "e2_global", "clip_ft_global")}  # fmt: skip
    ratio = mean["e2_region"] / mean["e2_global"] if mean["e2_global"] else float("inf")
    print(f"mean accuracy: E2 regional {mean['e2_region']:.1f}, E2 global {mean['e2_global']:.1f}, "
          f"CLIP-FT global {mean['clip_ft_global']:.1f}; regional / global = {ratio:.2f}x")  # fmt: skip
    print(f"mean search precision@10: E2 regional {mean_search['e2_region']:.1f}, E2 global "
          f"{mean_search['e2_global']:.1f}, CLIP-FT global {mean_search['clip_ft_global']:.1f}")  # fmt: skip
    report = json.loads((demo_dir / "report.json").read_text()) if (demo_dir / "report.json").exists() else {}
    write_result(
        "tagging",
        {
            "setting": (
                f"`e2-hf demo`{' --quick' if args.toy else ''} models (E2 and CLIP-FT from "
                f"{report.get('base', 'the demo base')}, trained on the hard synthetic catalog), "
                f"{per_entity['brand']['items']} validation products, candidates = each entity's distinct "
                "validation tags"
            ),
            "per_entity": per_entity,
            "mean": mean,
            "mean_search_precision_at_10": mean_search,
            "ratio_region_over_global": ratio,
            "demo_e2_full_sumr": report.get("e2", {}).get("full", {}).get("sumr"),
        },
        args.output,
    )


# ---------------------------------------------------------------- its section of BENCHMARKS.md
def render(result: dict) -> list[str]:
    models = ("e2_region", "e2_global", "clip_ft_global")
    per_entity, mean = result["per_entity"], result["mean"]
    accuracy_rows = [
        [entity, str(row["candidates"]), *(f"{row[model]:.1f}" for model in (*models, "chance"))]
        for entity, row in per_entity.items()
    ]
    accuracy_rows.append(["mean", "", *(f"{mean[model]:.1f}" for model in (*models, "chance"))])
    search_rows = [
        [entity, *(f"{row['search_precision_at_10'][model]:.1f}" for model in models)]
        for entity, row in per_entity.items()
    ]
    search_mean = result["mean_search_precision_at_10"]
    search_rows.append(["mean", *(f"{search_mean[model]:.1f}" for model in models)])
    return [
        *heading("6. Zero-shot tagging and entity-aware search: regional vs global embedding", result["setting"]),
        *table(["entity", "candidates", "E2 regional", "E2 global", "CLIP-FT global", "chance"], accuracy_rows),
        "",
        f"Top-1 accuracy in percent. E2 regional / E2 global (mean): {result['ratio_region_over_global']:.2f}x.",
        "",
        "Entity-aware search with the same embeddings: each tag text as a query, the share of its 10 best "
        "products (fewer when fewer carry the tag) that carry it, mean over the tags, in percent.",
        "",
        *table(["entity", "E2 regional", "E2 global", "CLIP-FT global"], search_rows),
        "",
    ]


if __name__ == "__main__":
    main()
