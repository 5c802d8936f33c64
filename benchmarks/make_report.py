"""Writes BENCHMARKS.md from the JSON files in benchmarks/results/ (no hand-typed numbers).

python benchmarks/make_report.py
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(result: dict) -> str:
    return "**met**" if result["target_met"] else "**missed**"


def heading(title: str, setting: str) -> list[str]:
    return [f"## {title}", "", f"Setting: {setting}.", ""]


def table(headers: list[str], rows: list[list[str]], first_column_numeric: bool = False) -> list[str]:
    """A Markdown table; the first column left-aligned unless numeric, the others right-aligned."""
    alignment = ["---:" if first_column_numeric else "---"] + ["---:"] * (len(headers) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in (headers, alignment, *rows)]


def timing_table(result: dict) -> list[str]:
    rows = [[side, f"{row['median_s']:.3f}", f"{row['min_s']:.3f}"] for side, row in result["timings"].items()]
    return table(["side", "median s", "min s"], rows)


def inference_section(result: dict) -> list[str]:
    parameters = result["parameters"]
    return [
        *heading("1. Inference: E2 vs CLIP image features", result["setting"]),
        *timing_table(result),
        "",
        f"E2 / CLIP = **{result['ratio_e2_over_clip']:.3f}x** (target <= {result['target_max_ratio']}x): "
        f"{verdict(result)}.",
        "",
        f"Parameters: CLIP {parameters['clip_parameters']:,}; E2 adds {parameters['e2_new_parameters']:,} = "
        f"{100 * parameters['share_of_clip']:.2f}% of CLIP's "
        f"(the paper says {100 * result['paper_share_of_clip']:.1f}%); "
        f"selection tokens {parameters['new_by_group']['selection_tokens']:,}, fusion blocks "
        f"{parameters['new_by_group']['fusion_blocks']:,}, entity norms and projections "
        f"{parameters['new_by_group']['region_head']:,}.",
        "",
    ]


def train_step_section(result: dict) -> list[str]:
    setting = (
        f"{result['setting']}. Product texts average {result['product_text_tokens']} tokens; {result['tags']} tags "
        f"per batch, {result['distinct_tags']} distinct, padded to {result['tag_tokens_padded_to']} tokens "
        "(the reference pads to 77)"
    )
    return [
        *heading("2. One training step: E2 vs CLIP fine-tuning", setting),
        *timing_table(result),
        "",
        f"E2 / CLIP-FT = **{result['ratio_e2_over_clip_ft']:.3f}x** (target <= {result['target_max_ratio']}x): "
        f"{verdict(result)}. With the reference's tag handling (every tag padded to 77 tokens, no deduplication) "
        f"E2 costs {result['ratio_reference_tags_over_clip_ft']:.3f}x.",
        "",
    ]


def retrieval_section(result: dict) -> list[str]:
    headers = ["N", "ours s", "bare N x N x d product s", "per-query sort loop s (scaled)", "speed-up", "ours / bare"]
    rows = [
        [
            f"{int(size):,}",
            f"{row['ours_s']:.1f}",
            f"{row['bare_matmul_s']:.1f}",
            f"{row['sort_loop_s_scaled']:.0f} ({row['sort_loop_queries_timed']} queries timed)",
            f"{row['speedup_over_sort_loop']:.0f}x",
            f"{row['ours_over_bare_matmul']:.2f}x",
        ]  # fmt: skip
        for size, row in result["sizes"].items()
    ]
    return [
        *heading("3. Full-candidate retrieval metrics", result["setting"]),
        *table(headers, rows, first_column_numeric=True),
        "",
        f"Target: at least {result['target_min_speedup_at_32528']:.0f}x faster than the loop at N = 32,528: "
        f"{verdict(result)}.",
        "",
        *profile_lines(result),
    ]


def profile_lines(result: dict) -> list[str]:
    """Where our time goes: the product itself, and counting ranks on top of it."""
    lines = []
    for size, row in result["sizes"].items():
        counting = row["ours_s"] - row["bare_matmul_s"]
        lines.append(
            f"- N = {int(size):,}: the product takes {row['bare_matmul_s']:.1f} s of our "
            f"{row['ours_s']:.1f} s; counting the ranks adds {counting:.1f} s."
        )
    if not result["target_met"]:
        lines += [
            "",
            "Plan: fuse the comparison and the count into the product (a small kernel, or `torch.compile` "
            "of the tile loop) so counting costs nothing beyond the product, and use a bf16 product where the "
            "CPU has AMX; the product itself is the floor.",
        ]
    return lines + [""]


def quality_section(result: dict) -> list[str]:
    names = {"e2": "E2 (region loss `clip`)", "e2_multi_positive": "E2 (`multi_positive`)", "clip_ft": "CLIP-FT"}
    entities = ("brand", "season", "subcategory", "composition")
    headers = ["model", "full SumR", "sample-100 SumR", "probe brand", "probe season", "probe sub-category",
               "probe composition"]  # fmt: skip

    def spread(value: dict) -> str:
        return f"{value['mean']:.1f} ± {value['std']:.1f}"

    rows = [
        [
            names.get(key, key),
            spread(row["full"]),
            spread(row["sample100"]),
            *(spread(row["linear_probe"][entity]) for entity in entities),
        ]  # fmt: skip
        for key, row in result["summary"].items()
    ]
    lines = [*heading("4. Quality on the synthetic catalog (--hard)", result["setting"]), *table(headers, rows)]
    lines += [
        "",
        "Mean ± standard deviation over seeds; linear-probe accuracies in percent on frozen global image "
        "embeddings (80/20 split of the validation products).",
        "",
    ]
    return lines


def data_section(result: dict) -> list[str]:
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


def tagging_section(result: dict) -> list[str]:
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


SECTIONS = {
    "inference": inference_section,
    "train_step": train_step_section,
    "retrieval": retrieval_section,
    "quality": quality_section,
    "data": data_section,
    "tagging": tagging_section,
}
COMMANDS = {
    "inference": "bench_inference.py",
    "train_step": "bench_train_step.py",
    "retrieval": "bench_retrieval.py",
    "quality": "bench_quality.py --seeds 3",
    "data": "bench_data.py",
    "tagging": "bench_tagging.py --demo-dir DIR",
}


def main() -> None:
    results = {name: load(name) for name in SECTIONS}
    machine = next((result["machine"] for result in results.values() if result), None)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/make_report.py` from `benchmarks/results/*.json`; "
        "every number below is copied from those files, written by the scripts in one run each.",
        "",
    ]
    if machine:
        lines += [
            f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch threads), "
            f"{machine['memory_gib']} GiB; Python {machine['python']}, torch {machine['torch']}, "
            f"transformers {machine['transformers']}. No GPU.",
            "",
        ]
    lines += [
        "Rerun one: `python benchmarks/<script>` (each prints its ratios and writes its JSON), then this "
        "generator. The scripts also take `--toy` (tiny sizes), which the test suite runs so they never rot.",
        "",
    ]
    for name, section in SECTIONS.items():
        if results[name] is None:
            lines += [f"## {name}", "", f"Not run yet: `python benchmarks/{COMMANDS[name]}`.", ""]
        else:
            lines += section(results[name]) + [f"Rerun: `python benchmarks/{COMMANDS[name]}`.", ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
