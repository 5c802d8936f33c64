"""Benchmark 5: data pipeline throughput, FashionGen-format reader + E2CLIPProcessor.

A synthetic catalog in the FashionGen HDF5 layout with FashionGen's 256 x 256 images is read
through `ProductDataset` and batched by the collator (224 px CLIP preprocessing, tokenization of
texts and tags), with 0, 1 and 2 dataloader workers. Reported: images per second, per worker,
and the GPU training step rate (batch 64) that rate can feed.

    python benchmarks/bench_data.py
"""

import sys
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402
from report import heading, table  # noqa: E402

from e2_hf import E2CLIPProcessor  # noqa: E402
from e2_hf.data import E2Collator, ProductDataset, open_catalog  # noqa: E402
from e2_hf.modeling import clip_image_processor  # noqa: E402
from e2_hf.synthetic import all_texts, make_synthetic  # noqa: E402
from e2_hf.tokenization import build_tokenizer_from_texts  # noqa: E402

ENTITIES = ["brand", "season", "subcategory", "composition"]
GPU_BATCH = 64


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    products, image_size, batch = (40, 64, 8) if args.toy else (600, 256, 64)
    folder = Path(tempfile.mkdtemp())
    make_synthetic(folder, products=products, seed=0, views=3, image_size=image_size, progress=False)
    tokenizer = build_tokenizer_from_texts(all_texts(folder), folder / "tokenizer", 500)
    processor = E2CLIPProcessor(clip_image_processor(224), tokenizer, entities=ENTITIES)
    dataset = ProductDataset(open_catalog(f"fashiongen:{folder / 'train.h5'}"), ENTITIES, training=True)
    results = {}
    for workers in (0, 1, 2):
        loader = DataLoader(
            dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=E2Collator(processor)
        )
        start, images = time.perf_counter(), 0
        for batch_inputs in loader:
            images += batch_inputs["pixel_values"].shape[0]
        seconds = time.perf_counter() - start
        rate = images / seconds
        results[str(workers)] = {
            "images_per_s": rate,
            "images_per_s_per_worker": rate / max(workers, 1),
            "feeds_gpu_steps_per_s_at_batch_64": rate / GPU_BATCH,
            "seconds": seconds,
        }
        print(
            f"{workers} workers: {rate:.0f} images/s ({rate / max(workers, 1):.0f} per worker), "
            f"feeds {rate / GPU_BATCH:.2f} steps/s at batch {GPU_BATCH}"
        )
    write_result(
        "data",
        {
            "setting": f"{len(dataset)} products, {image_size} px images in the FashionGen HDF5 layout, one random "
            f"view per product, CLIP preprocessing to 224 px, texts and 4 tags tokenized, batch {batch}; workers "
            "0 means the main process",
            "workers": results,
        },
        args.output,
    )


# ---------------------------------------------------------------- its section of BENCHMARKS.md
def render(result: dict) -> list[str]:
    headers = ["dataloader workers", "images / s", "per worker", "GPU steps / s it feeds (batch 64)"]
    rows = [
        [
            workers,
            f"{row['images_per_s']:.0f}",
            f"{row['images_per_s_per_worker']:.0f}",
            f"{row['feeds_gpu_steps_per_s_at_batch_64']:.2f}",
        ]  # fmt: skip
        for workers, row in result["workers"].items()
    ]
    return [*heading("5. Data pipeline", result["setting"]), *table(headers, rows, first_column_numeric=True), ""]


if __name__ == "__main__":
    main()
