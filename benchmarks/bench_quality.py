"""Benchmark 4: quality on the synthetic catalog (--hard), same budget, several seeds.

For each seed: a new catalog and a small random CLIP (as the demo), then E2 with the paper's
region loss (`clip`), E2 with `multi_positive`, and CLIP-FT, all on the same data and budget.
Reported per model: SumR on both protocols (mean and standard deviation over seeds) and the
linear-probe accuracy per entity on frozen global image embeddings of the validation products.

    python benchmarks/bench_quality.py [--seeds 3]
"""

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402

from e2_hf.demo import DEFAULT, QUICK, DemoSize, demo_training_arguments, prepare_base  # noqa: E402
from e2_hf.evaluation import linear_probe_accuracy, retrieval_metrics, sample100_metrics  # noqa: E402
from e2_hf.evaluation.embedding import embed_products  # noqa: E402
from e2_hf.synthetic import make_synthetic  # noqa: E402
from e2_hf.training import train  # noqa: E402

MODELS = {
    "e2": {"baseline": "e2"},
    "e2_multi_positive": {"baseline": "e2", "region_loss": "multi_positive"},
    "clip_ft": {"baseline": "clip-ft"},
}
ENTITIES = ["brand", "season", "subcategory", "composition"]


def one_seed(seed: int, size: DemoSize, folder: Path) -> dict:
    catalog_dir = folder / "catalog"
    make_synthetic(
        catalog_dir, products=size.products, seed=seed, views=3, image_size=size.image_size, hard=True, progress=False
    )
    base = prepare_base(folder, catalog_dir, size, seed)
    eval_spec = f"jsonl:{catalog_dir / 'catalog.jsonl'}:validation"
    results = {}
    for name, overrides in MODELS.items():
        run_dir = folder / "runs" / name
        train(demo_training_arguments(base, catalog_dir, run_dir, size, seed, **overrides))
        images, texts, catalog = embed_products(run_dir / "model", eval_spec)
        subcategories = [product.tags.get("subcategory") or "" for product in catalog.products]
        results[name] = {
            "full": retrieval_metrics(images, texts),
            "sample100": sample100_metrics(images, texts, subcategories, queries=1000, seeds=5),
            "linear_probe": {
                entity: linear_probe_accuracy(images, catalog.tag_values(entity), seed=seed)["accuracy"]
                for entity in ENTITIES
            },
        }
        print(
            f"seed {seed} {name}: full SumR {results[name]['full']['sumr']:.1f}, "
            f"sample100 SumR {results[name]['sample100']['sumr']:.1f}, probes {results[name]['linear_probe']}"
        )
    return results


def summarise(per_seed: list[dict]) -> dict:
    def mean_std(values):
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    summary = {}
    for name in MODELS:
        summary[name] = {
            protocol: mean_std([run[name][protocol]["sumr"] for run in per_seed]) for protocol in ("full", "sample100")
        }
        summary[name]["linear_probe"] = {
            entity: mean_std([run[name]["linear_probe"][entity] for run in per_seed]) for entity in ENTITIES
        }
    return summary


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--seeds", type=int, default=3)
    args = arguments.parse_args()
    size = QUICK if args.toy else DemoSize(**{**DEFAULT.__dict__, "products": 1000, "epochs": 14})
    seeds = list(range(1 if args.toy else args.seeds))
    per_seed = []
    for seed in seeds:
        folder = Path(tempfile.mkdtemp(prefix=f"e2-quality-{seed}-"))
        per_seed.append(one_seed(seed, size, folder))
        shutil.rmtree(folder, ignore_errors=True)
    summary = summarise(per_seed)
    for name, row in summary.items():
        print(
            f"{name}: full SumR {row['full']['mean']:.1f} +- {row['full']['std']:.1f}, "
            f"sample100 SumR {row['sample100']['mean']:.1f} +- {row['sample100']['std']:.1f}"
        )
    write_result(
        "quality",
        {
            "setting": f"synthetic catalog --hard, {size.products} products (80/20 split), {size.image_size} px, "
            f"small random CLIP (width {size.width}, {size.layers} vision layers), "
            f"{size.warmup_epochs}+{size.epochs} epochs, batch {size.batch_size}, seeds {seeds}",
            "summary": summary,
            "per_seed": per_seed,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
