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


def inference_section(result: dict) -> list[str]:
    parameters = result["parameters"]
    return [
        "## 1. Inference: E2 vs CLIP image features",
        "",
        f"Setting: {result['setting']}.",
        "",
        "| side | median s | min s |",
        "| --- | ---: | ---: |",
        *[f"| {side} | {row['median_s']:.3f} | {row['min_s']:.3f} |" for side, row in result["timings"].items()],
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
    return [
        "## 2. One training step: E2 vs CLIP fine-tuning",
        "",
        f"Setting: {result['setting']}. Product texts average "
        f"{result['product_text_tokens']} tokens; {result['tags']} tags per batch, {result['distinct_tags']} distinct, "
        f"padded to {result['tag_tokens_padded_to']} tokens (the reference pads to 77).",
        "",
        "| side | median s | min s |",
        "| --- | ---: | ---: |",
        *[f"| {side} | {row['median_s']:.3f} | {row['min_s']:.3f} |" for side, row in result["timings"].items()],
        "",
        f"E2 / CLIP-FT = **{result['ratio_e2_over_clip_ft']:.3f}x** (target <= {result['target_max_ratio']}x): "
        f"{verdict(result)}. With the reference's tag handling (every tag padded to 77 tokens, no deduplication) "
        f"E2 costs {result['ratio_reference_tags_over_clip_ft']:.3f}x.",
        "",
    ]


def retrieval_section(result: dict) -> list[str]:
    rows = [
        f"| {int(size):,} | {row['ours_s']:.1f} | {row['bare_matmul_s']:.1f} | {row['sort_loop_s_scaled']:.0f} "
        f"({row['sort_loop_queries_timed']} queries timed) | {row['speedup_over_sort_loop']:.0f}x | "
        f"{row['ours_over_bare_matmul']:.2f}x |"
        for size, row in result["sizes"].items()
    ]
    return [
        "## 3. Full-candidate retrieval metrics",
        "",
        f"Setting: {result['setting']}.",
        "",
        "| N | ours s | bare N x N x d product s | per-query sort loop s (scaled) | speed-up | ours / bare |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
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
    lines = [
        "## 4. Quality on the synthetic catalog (--hard)",
        "",
        f"Setting: {result['setting']}.",
        "",
        "| model | full SumR | sample-100 SumR | probe brand | probe season | probe sub-category | probe composition |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in result["summary"].items():
        probes = " | ".join(
            f"{row['linear_probe'][e]['mean']:.1f} ± {row['linear_probe'][e]['std']:.1f}"
            for e in ("brand", "season", "subcategory", "composition")
        )
        lines.append(
            f"| {names.get(key, key)} | {row['full']['mean']:.1f} ± {row['full']['std']:.1f} | "
            f"{row['sample100']['mean']:.1f} ± {row['sample100']['std']:.1f} | {probes} |"
        )
    lines += [
        "",
        "Mean ± standard deviation over seeds; linear-probe accuracies in percent on frozen global image "
        "embeddings (80/20 split of the validation products).",
        "",
    ]
    return lines


def data_section(result: dict) -> list[str]:
    rows = [
        f"| {workers} | {row['images_per_s']:.0f} | {row['images_per_s_per_worker']:.0f} | "
        f"{row['feeds_gpu_steps_per_s_at_batch_64']:.2f} |"
        for workers, row in result["workers"].items()
    ]
    return [
        "## 5. Data pipeline",
        "",
        f"Setting: {result['setting']}.",
        "",
        "| dataloader workers | images / s | per worker | GPU steps / s it feeds (batch 64) |",
        "| ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]


def tagging_section(result: dict) -> list[str]:
    mean = result["mean"]
    search_rows = [
        f"| {entity} | {row['search_precision_at_10']['e2_region']:.1f} | "
        f"{row['search_precision_at_10']['e2_global']:.1f} | {row['search_precision_at_10']['clip_ft_global']:.1f} |"
        for entity, row in result["per_entity"].items()
    ]
    search_mean = result["mean_search_precision_at_10"]
    search_rows.append(
        f"| mean | {search_mean['e2_region']:.1f} | {search_mean['e2_global']:.1f} | "
        f"{search_mean['clip_ft_global']:.1f} |"
    )
    rows = [
        f"| {entity} | {row['candidates']} | {row['e2_region']:.1f} | {row['e2_global']:.1f} | "
        f"{row['clip_ft_global']:.1f} | {row['chance']:.1f} |"
        for entity, row in result["per_entity"].items()
    ]
    return [
        "## 6. Zero-shot tagging and entity-aware search: regional vs global embedding",
        "",
        f"Setting: {result['setting']}.",
        "",
        "| entity | candidates | E2 regional | E2 global | CLIP-FT global | chance |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        f"| mean | | {mean['e2_region']:.1f} | {mean['e2_global']:.1f} | {mean['clip_ft_global']:.1f} | "
        f"{mean['chance']:.1f} |",
        "",
        f"Top-1 accuracy in percent. E2 regional / E2 global (mean): {result['ratio_region_over_global']:.2f}x.",
        "",
        "Entity-aware search with the same embeddings: each tag text as a query, the share of its 10 best "
        "products (fewer when fewer carry the tag) that carry it, mean over the tags, in percent.",
        "",
        "| entity | E2 regional | E2 global | CLIP-FT global |",
        "| --- | ---: | ---: | ---: |",
        *search_rows,
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
