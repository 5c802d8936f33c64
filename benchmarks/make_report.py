"""Writes BENCHMARKS.md from the JSON files in benchmarks/results/ (no hand-typed numbers): the
header, then each benchmark script's own section (`render(result)` in the script), and the summary
table of README.md and docs/benchmarks.md.

python benchmarks/make_report.py
"""

import json
import sys
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import table  # noqa: E402


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


# each result file and the benchmark script that writes it and renders its section (`render(result)`)
SECTIONS = {
    "inference": "bench_inference",
    "train_step": "bench_train_step",
    "retrieval": "bench_retrieval",
    "quality": "bench_quality",
    "data": "bench_data",
    "tagging": "bench_tagging",
    "selection_experiments": "selection_experiments",
    "real_catalog": "real_catalog",
    "framing": "framing",
    "serving": "serving",
    "search_scale": "search_scale",
    "downstream": "downstream",
    "hostile_input": "hostile_input",
    "startup": "startup",
    "milvus_store": "milvus_store",
}
COMMANDS = {
    "inference": "bench_inference.py",
    "train_step": "bench_train_step.py",
    "retrieval": "bench_retrieval.py",
    "quality": "bench_quality.py --seeds 3",
    "data": "bench_data.py",
    "tagging": "bench_tagging.py --demo-dir DIR",
    "selection_experiments": "selection_experiments.py --testbed NAME --recipe NAME --seeds 0 [--clip-ft]",
    "real_catalog": "real_catalog.py",
    "framing": "framing.py",
    "serving": "serving.py --demo-dir DIR",
    "search_scale": "search_scale.py",
    "downstream": "downstream.py --seeds 3",
    "hostile_input": "hostile_input.py",
    "startup": "startup.py",
    "milvus_store": "milvus_store.py --products 100000",
}


# The short table of headline results in README.md and docs/benchmarks.md, between these markers.
SUMMARY_START, SUMMARY_END = "<!-- summary table: benchmarks/make_report.py -->", "<!-- end of summary table -->"


def summary_table(results: dict[str, dict | None]) -> list[str]:
    """Headline figures, each from its benchmark's JSON, with the section of BENCHMARKS.md it comes from."""
    rows = []
    if results.get("inference"):
        rows.append(["image features, E2 / CLIP (ViT-B/32, batch 32)",
                     f"{results['inference']['ratio_e2_over_clip']:.3f}x", "1"])  # fmt: skip
    if results.get("train_step"):
        rows.append(["a training step, E2 / CLIP fine-tuning", f"{results['train_step']['ratio_e2_over_clip_ft']:.3f}x",
                     "2"])  # fmt: skip
    if results.get("quality"):
        quality = results["quality"]
        summary, seeds = quality["summary"], len(quality["per_seed"])
        e2, clip_ft = summary["e2_demo"], summary["clip_ft"]
        brand_hit, brand_chance = e2["selection"]["brand"]["hit"], e2["selection"]["brand"]["chance"]
        rows += [
            [f"brand tokens on the logo ({seeds} seeds, synthetic catalog)",
             f"{100 * brand_hit['mean']:.1f}% of views ({brand_hit['mean'] / brand_chance['mean']:.1f}x chance)", "4"],
            [f"brand tagging: E2's brand region / CLIP-FT's global embedding ({seeds} seeds)",
             f"{e2['tagging']['brand']['region']['mean']:.1f}% / {clip_ft['tagging']['brand']['global']['mean']:.1f}% "
             f"(chance {e2['tagging']['brand']['chance']['mean']:.1f}%)", "4"],
            [f"retrieval SumR, full candidates: E2 / CLIP-FT ({seeds} seeds)",
             f"{e2['full']['mean']:.1f} / {clip_ft['full']['mean']:.1f}", "4"],
        ]  # fmt: skip
    if results.get("search_scale"):
        scale = results["search_scale"]
        rows_at, least_recall = scale["goal"]["at_rows"], scale["goal"]["recall_at_10"]
        measured = scale["sizes"][str(rows_at)]["summary"]
        good_enough = {kind: row for kind, row in measured.items() if row["recall_at_10"] >= least_recall}
        kind, best = max(good_enough.items(), key=lambda item: item[1]["speedup_batch_1"])
        speed = f"{best['speedup_batch_1']:.0f}x faster at recall@10 {best['recall_at_10']:.3f}"
        rows.append([f"search at {rows_at:,} rows: {kind} / brute force", speed, "8"])
    return table(["what", "measured", "BENCHMARKS.md section"], rows)


def replace_summary(path: Path, lines: list[str]) -> None:
    """Writes `lines` between the summary markers of `path`."""
    text = path.read_text()
    start, end = text.index(SUMMARY_START) + len(SUMMARY_START), text.index(SUMMARY_END)
    path.write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:])


def render_section(name: str, result: dict) -> list[str]:
    """The section of BENCHMARKS.md for the result file `name`, rendered by the script that wrote it."""
    return import_module(SECTIONS[name]).render(result)


def main() -> None:
    results = {name: load(name) for name in SECTIONS}
    for page in (ROOT / "README.md", ROOT / "docs" / "benchmarks.md"):
        replace_summary(page, summary_table(results))
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
            f"Machine (unless a section names another): {machine['cpu']}, {machine['cores']} cores "
            f"({machine['torch_threads']} torch threads), {machine['memory_gib']} GiB; Python {machine['python']}, "
            f"torch {machine['torch']}, transformers {machine['transformers']}. No GPU.",
            "",
        ]
    lines += [
        "Rerun one: `python benchmarks/<script>` (each prints its ratios and writes its JSON), then this "
        "generator. The scripts also take `--toy` (tiny sizes), which the test suite runs so they never rot.",
        "",
    ]
    for name in SECTIONS:
        if results[name] is not None and machine and results[name]["machine"]["cpu"] != machine["cpu"]:
            other = results[name]["machine"]
            section_lines = render_section(name, results[name])
            note = (f"Measured on another machine: {other['cpu']}, {other['cores']} cores, torch {other['torch']}, "
                    f"transformers {other['transformers']}; compare its ratios only with each other.")  # fmt: skip
            lines += (
                section_lines[:2]
                + [note, ""]
                + section_lines[2:]
                + [f"Rerun: `python benchmarks/{COMMANDS[name]}`.", ""]
            )
            continue
        if results[name] is None:
            lines += [f"## {name}", "", f"Not run yet: `python benchmarks/{COMMANDS[name]}`.", ""]
        else:
            lines += render_section(name, results[name]) + [f"Rerun: `python benchmarks/{COMMANDS[name]}`.", ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
