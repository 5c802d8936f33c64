"""Why do the selection tokens miss the logo? Named experiments: a test bed x a recipe x a seed.

Each experiment writes a synthetic catalog (with ground-truth detail boxes), learns a tokenizer,
builds a small random CLIP (or takes a pretrained small base), trains E2 (and, with `--clip-ft`,
CLIP-FT on the same data and budget) and scores: the selection metrics per entity (hit rate,
chance, position-only, collapse, interventions), zero-shot tagging per entity (regional and
global) and full-candidate SumR. One JSON per experiment under `--output-dir`, then a summary.

    python benchmarks/selection_experiments.py --testbed v0.1 --recipe paper --seeds 0 1 --clip-ft
    python benchmarks/selection_experiments.py --testbed grid8_b12_palette --recipe pretrained_mp pretrained_mp_isolated
    python benchmarks/selection_experiments.py --plan PLAN.json --jobs 8 --device cuda --results results.jsonl

Test beds and recipes are the dictionaries below; the README of the results is BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import heading, prose, table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The catalog and model sizes of a test bed (DemoSize fields plus make_synthetic options), explicit
# so that a test bed means the same thing whatever the demo's defaults become.
V01 = {"patch_size": 16, "brands": 48, "logo_colours": "random", "framing": "tight"}  # the 0.1 demo
TESTBEDS = {
    "v0.1": V01,
    "v0.1_varied": {**V01, "framing": "varied"},
    "grid8": {**V01, "patch_size": 8, "framing": "varied"},
    "grid8_b12": {**V01, "patch_size": 8, "framing": "varied", "brands": 12},
    "grid8_b12_logo12": {**V01, "patch_size": 8, "framing": "varied", "brands": 12, "logo_size": 12},
    "grid4_b12_logo12": {**V01, "framing": "varied", "brands": 12, "logo_size": 12},
    "grid8_b12_palette": {**V01, "patch_size": 8, "framing": "varied", "brands": 12, "logo_colours": "palette"},
}
# Training settings on top of the demo's (TrainingArguments fields). `"base": "pretrained"` starts
# from the shipped small pretrained CLIP (benchmarks/pretrain_small_clip.py) at its learning rates.
PRETRAINED = {"base": "pretrained"}
RECIPES = {
    "paper": {},
    "multi_positive": {"region_loss": "multi_positive"},
    "isolated": {"selection_attention": "isolated"},
    "mp_isolated": {"region_loss": "multi_positive", "selection_attention": "isolated"},
    "mp_long_warmup": {"region_loss": "multi_positive", "warmup_epochs": 6, "epochs": 14},
    "mp_fast_new": {"region_loss": "multi_positive", "warmup_lr": 5e-3},
    "pretrained_paper": PRETRAINED,
    "pretrained_mp": {**PRETRAINED, "region_loss": "multi_positive"},
    "pretrained_isolated": {**PRETRAINED, "selection_attention": "isolated"},
    "pretrained_mp_isolated": {**PRETRAINED, "region_loss": "multi_positive", "selection_attention": "isolated"},
    "pretrained_mp_lr5e-5": {**PRETRAINED, "region_loss": "multi_positive", "lr": 5e-5},
    # the demo's options with a longer stage 1 (only E2's parts train) in the same 20 epochs
    "pretrained_mp_isolated_warm4": {
        **PRETRAINED,
        "region_loss": "multi_positive",
        "selection_attention": "isolated",
        "warmup_epochs": 4,
        "epochs": 16,
    },
}


def testbed_sizes(testbed: str, toy: bool):
    """(DemoSize, make_synthetic options) of a test bed."""
    from e2_hf.demo import DEFAULT, QUICK

    settings = dict(TESTBEDS[testbed])
    keys = ("brands", "logo_size", "framing", "logo_colours")
    catalog_options = {key: settings.pop(key) for key in keys if key in settings}
    if toy:
        catalog_options.pop("logo_size", None)
        return QUICK, catalog_options
    return dataclasses.replace(DEFAULT, **settings), catalog_options


def run_experiment(testbed: str, recipe: str, seed: int, output_dir: str, device: str, clip_ft: bool,
                   toy: bool = False, num_workers: int = 0, threads: int | None = None) -> dict:  # fmt: skip
    import torch

    from e2_hf.data import open_catalog
    from e2_hf.demo import ENTITIES, PRETRAINED_BASE, demo_training_arguments, evaluate_model, prepare_base
    from e2_hf.evaluation import load_for_inference
    from e2_hf.synthetic import make_synthetic
    from e2_hf.tagging import catalog_candidates
    from e2_hf.training import train

    if threads:
        torch.set_num_threads(threads)
    size, catalog_options = testbed_sizes(testbed, toy)
    root = Path(output_dir) / f"{testbed}-{recipe}-s{seed}"
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    catalog_dir = root / "catalog"
    make_synthetic(catalog_dir, products=size.products, seed=seed, views=3, image_size=size.image_size, hard=True,
                   progress=False, **catalog_options)  # fmt: skip
    settings = dict(RECIPES[recipe])
    pretrained = settings.pop("base", None) == "pretrained" and not toy
    base = str(PRETRAINED_BASE) if pretrained else prepare_base(root, catalog_dir, size, seed)
    eval_spec = f"jsonl:{catalog_dir / 'catalog.jsonl'}:validation"
    result = {"testbed": testbed, "recipe": recipe, "seed": seed, "testbed_settings": TESTBEDS[testbed],
              "recipe_settings": RECIPES[recipe], "device": device}  # fmt: skip
    for baseline in ("e2", "clip-ft") if clip_ft else ("e2",):
        overrides = (
            settings if baseline == "e2" else {key: settings[key] for key in ("lr", "warmup_lr") if key in settings}
        )
        args = demo_training_arguments(base, catalog_dir, root / baseline, size, seed, pretrained=pretrained,
                                       baseline=baseline, num_workers=num_workers, **overrides)  # fmt: skip
        train(args)
        entry = evaluate_model(root / baseline / "model", catalog_dir, device)
        entry["sumr"] = entry["full"]["sumr"]
        model, processor, model_device, _ = load_for_inference(root / baseline / "model", device)
        candidates = catalog_candidates(open_catalog(eval_spec), ENTITIES)
        entry["tag_text_cosine"] = tag_text_cosine(model, processor, candidates, model_device)
        if baseline == "e2":
            entry["gradients"] = gradient_check(model, processor, catalog_dir)
        result[baseline.replace("-", "_")] = entry
    result["seconds"] = time.perf_counter() - start
    for name in ("e2", "clip-ft"):  # keep the JSON and the models, drop the bulk
        shutil.rmtree(root / name / "checkpoints", ignore_errors=True)
    (root / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def tag_text_cosine(model, processor, candidates: dict, device: str) -> dict:
    """Per entity, the mean pairwise cosine of its distinct tags' text embeddings: near 1 when the
    text tower sees them as one (the region loss then has nothing to pull apart)."""
    import torch

    from e2_hf.tagging import candidate_embeddings

    embeddings = candidate_embeddings(model, processor, candidates, device)
    result = {}
    for entity, tags in embeddings.items():
        similarity = tags @ tags.t()  # normalised rows
        off_diagonal = similarity[~torch.eye(len(tags), dtype=torch.bool)]
        result[entity] = float(off_diagonal.mean()) if len(off_diagonal) else float("nan")
    return result


def gradient_check(model, processor, catalog_dir: Path, batch_size: int = 64) -> dict:
    """Does E2's selection machinery get gradient? On one training batch of the trained model (train
    mode: Gumbel straight-through), the norm of each loss's gradient relative to the weights' norm,
    per group: selection tokens, each fusion block's query/key/value projections, the region head."""
    import torch

    from e2_hf.data import E2Collator, ProductDataset, open_catalog
    from e2_hf.training.trainer import COLLATOR_BOOKKEEPING

    dataset = ProductDataset(open_catalog(f"fashiongen:{catalog_dir / 'train.h5'}"), model.config.entities,
                             training=True, seed=0)  # fmt: skip
    batch = E2Collator(processor)([dataset[index] for index in range(min(batch_size, len(dataset)))])
    model.train()
    torch.manual_seed(0)
    groups = {"selection_tokens": ["vision_model.selection_tokens"], "region_head": ["region_head."]}
    for block in range(len(model.vision_model.fusion_blocks)):
        for projection in ("q_proj", "k_proj", "v_proj"):
            groups[f"fusion{block}.{projection}"] = [f"vision_model.fusion_blocks.{block}.{projection}."]
    report = {}
    for loss_name in ("global_loss", "region_loss"):
        model.zero_grad()
        outputs = model(**{key: value for key, value in batch.items() if key not in COLLATOR_BOOKKEEPING})
        getattr(outputs, loss_name).backward()  # the batch has return_loss=True
        for group, prefixes in groups.items():
            parameters = [p for n, p in model.named_parameters() if any(n.startswith(x) for x in prefixes)]
            gradient = torch.sqrt(sum(((p.grad**2).sum() for p in parameters if p.grad is not None), torch.zeros(())))
            weight = torch.sqrt(sum((p.detach() ** 2).sum() for p in parameters))
            report.setdefault(group, {})[loss_name] = float(gradient / weight)
    model.zero_grad()
    model.eval()
    return report


def summary_line(result: dict) -> str:
    e2 = result["e2"]
    parts = [f"{result['testbed']:>18} {result['recipe']:>16} s{result['seed']}", f"SumR {e2['sumr']:6.1f}"]
    for entity in ("brand", "season"):
        block = e2["selection"]["entities"][entity]["blocks"][-1]
        parts.append(
            f"{entity} hit {block['hit']:.3f} (best {block['best_token_hit']:.3f}) "
            f"chance {block['chance']:.3f} pos-only {block['position_only']:.3f}"
        )
    brand = e2["tagging"]["brand"]
    parts.append(f"tag brand R {brand['region']:.1f} G {brand['global']:.1f} chance {brand['chance']:.1f}")
    if "clip_ft" in result:
        clip_ft = result["clip_ft"]
        parts.append(f"CLIP-FT SumR {clip_ft['sumr']:.1f} brand G {clip_ft['tagging']['brand']['global']:.1f}")
    parts.append(f"{result['seconds']:.0f}s")
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testbed", nargs="+", default=["demo"], choices=sorted(TESTBEDS))
    parser.add_argument("--recipe", nargs="+", default=["paper"], choices=sorted(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--plan", help="a JSON file: a list of [testbed, recipe, seed] (instead of the product above)")
    parser.add_argument("--output-dir", default="selection-experiments")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers of each training run")
    parser.add_argument("--clip-ft", action="store_true", help="also train CLIP-FT on the same data and budget")
    parser.add_argument("--toy", action="store_true", help="tiny sizes (a smoke test of the script)")
    parser.add_argument("--results", help="append each result as a JSON line to this file")
    parser.add_argument("--output", help="results JSON (default benchmarks/results/selection_experiments.json); "
                        "runs already there are kept unless this run repeats them")  # fmt: skip
    args = parser.parse_args()
    if args.plan:
        runs = [tuple(run) for run in json.loads(Path(args.plan).read_text())]
    else:
        runs = list(itertools.product(args.testbed, args.recipe, args.seeds))
    os.makedirs(args.output_dir, exist_ok=True)
    threads = 1 if args.device == "cuda" else max(1, (os.cpu_count() or 1) // args.jobs)
    common = dict(output_dir=args.output_dir, device=args.device, clip_ft=args.clip_ft, toy=args.toy,
                  num_workers=args.num_workers, threads=threads)  # fmt: skip
    results = []

    def record(result: dict) -> None:
        results.append(result)
        print(summary_line(result), flush=True)
        if args.results:
            with open(args.results, "a") as handle:
                handle.write(json.dumps(result) + "\n")

    with ProcessPoolExecutor(args.jobs) as pool:
        pending = {pool.submit(run_experiment, *run, **common): run for run in runs}
        for future in as_completed(pending):
            try:
                record(future.result())
            except Exception as error:  # keep the other experiments going
                print(f"{pending[future]} failed: {error!r}", flush=True)
    print("\nall results:")
    for result in results:
        print(summary_line(result))
    if args.output or not args.toy:  # a toy run writes only where it is told to
        save_runs(results, args.output)


def save_runs(results: list[dict], output: str | None) -> None:
    """Adds the runs to the results JSON (a run with the same test bed, recipe and seed is replaced)."""
    from common import RESULTS, write_result

    path = Path(output) if output else RESULTS / "selection_experiments.json"
    previous = json.loads(path.read_text())["runs"] if path.is_file() else []
    done = {(run["testbed"], run["recipe"], run["seed"]) for run in results}
    runs = [run for run in previous if (run["testbed"], run["recipe"], run["seed"]) not in done] + results
    setting = ("selection experiments on the synthetic catalog --hard: each run a test bed (catalog and patch "
               "grid), a recipe and a seed; E2 (and CLIP-FT where trained) on the same data and budget")  # fmt: skip
    write_result("selection_experiments", {"setting": setting, "runs": runs}, str(path))


# ---------------------------------------------------------------- its section of BENCHMARKS.md
def render(result: dict) -> list[str]:
    """One row per run: where the brand and season tokens look, brand tagging, SumR."""

    def percent(value: float) -> str:
        return f"{100 * value:.1f}"

    rows = []
    for run in sorted(result["runs"], key=lambda run: (run["testbed"], run["recipe"], run["seed"])):
        e2 = run["e2"]
        brand = e2["selection"]["entities"]["brand"]["blocks"][-1]
        season = e2["selection"]["entities"]["season"]["blocks"][-1]
        clip_ft = run.get("clip_ft")
        rows.append([
            run["testbed"], run["recipe"], str(run["seed"]),
            f"{percent(brand['hit'])} / {percent(brand['chance'])} / {percent(brand['position_only'])}",
            percent(brand["best_token_hit"]),
            f"{percent(season['hit'])} / {percent(season['position_only'])}",
            f"{e2['tagging']['brand']['region']:.1f} ({e2['tagging']['brand']['chance']:.1f})",
            f"{e2['sumr']:.1f}",
            f"{clip_ft['sumr']:.1f}" if clip_ft else "",
            f"{clip_ft['tagging']['brand']['global']:.1f}" if clip_ft else "",
        ])  # fmt: skip
    headers = ["test bed", "recipe", "seed", "brand hit / chance / position-only", "best brand token",
               "season hit / position-only", "brand tagging, regional (chance)", "E2 SumR", "CLIP-FT SumR",
               "CLIP-FT brand tagging"]  # fmt: skip
    return [
        *heading("Making the regions real: selection experiments", result["setting"]),
        "Last fusion block; hit rates in percent of validation views, mean over the entity's tokens. Test beds "
        "and recipes are defined in `benchmarks/selection_experiments.py`; what they show is discussed below "
        "the table.",
        "",
        *table(headers, rows),
        "",
        *prose("selection_experiments", discussion_values(result["runs"])),
    ]


# the runs the discussion (benchmarks/prose/selection_experiments.md) quotes, by the name of its values
DISCUSSED_RUNS = {
    "v01": ("v0.1", "paper", 0),
    "palette": ("grid8_b12_palette", "multi_positive", 0),
    "paper": ("grid8_b12_palette", "pretrained_paper", 0),
    "multi": ("grid8_b12_palette", "pretrained_mp", 0),
    "isolated": ("grid8_b12_palette", "pretrained_mp_isolated", 0),
    "isolated_clip": ("grid8_b12_palette", "pretrained_isolated", 0),
    "random_isolated": ("grid8_b12_palette", "mp_isolated", 0),
}
WARM_RUNS = [("grid8_b12_palette", "pretrained_mp_isolated_warm4", seed) for seed in (0, 1, 2)]
RETRIEVAL_RUNS = [
    ("v0.1", "paper", 0),
    ("grid8_b12", "multi_positive", 0),
    ("grid8_b12_palette", "pretrained_paper", 0),
]


def run_values(name: str, run: dict) -> dict[str, float]:
    """The figures of one run the discussion quotes, as `{name}_{figure}`."""
    brand = run["e2"]["selection"]["entities"]["brand"]["blocks"][-1]
    season = run["e2"]["selection"]["entities"]["season"]["blocks"][-1]
    tagging = run["e2"]["tagging"]["brand"]
    moved = run["e2"]["selection"]["interventions"].get("logo_moved", {})
    follow = moved.get("entities", {}).get("brand", [{}])[-1].get("follow_if_hit", float("nan"))
    values = {
        "brand_hit": 100 * brand["hit"], "brand_chance": 100 * brand["chance"],
        "brand_position_only": 100 * brand["position_only"],
        "brand_over_chance": brand["hit"] / brand["chance"],
        "brand_over_position_only": brand["hit"] / brand["position_only"],
        "season_hit": 100 * season["hit"], "season_position_only": 100 * season["position_only"],
        "brand_tagging": tagging["region"], "brand_tagging_chance": tagging["chance"],
        "logo_follow": 100 * follow, "e2_sumr": run["e2"]["sumr"],
    }  # fmt: skip
    cosine = run["e2"].get("tag_text_cosine", {}).get("brand")
    if cosine is not None:
        values["brand_tag_cosine"] = cosine
    if run.get("clip_ft"):
        values.update(
            clip_ft_sumr=run["clip_ft"]["sumr"], clip_ft_brand_tagging=run["clip_ft"]["tagging"]["brand"]["global"]
        )
    return {f"{name}_{figure}": value for figure, value in values.items()}


def discussion_values(runs: list[dict]) -> dict[str, object]:
    """Every value `benchmarks/prose/selection_experiments.md` quotes that these runs measured."""
    by_key = {(run["testbed"], run["recipe"], run["seed"]): run for run in runs}
    values: dict[str, object] = {}
    for name, key in DISCUSSED_RUNS.items():
        if key in by_key:
            values.update(run_values(name, by_key[key]))
    warm = [run_values("warm", by_key[key]) | {"seed": key[2]} for key in WARM_RUNS if key in by_key]
    if len(warm) >= 2:
        values["warm_found"] = sum(run["warm_brand_over_chance"] >= 3 and run["warm_brand_over_position_only"] >= 2
                                   for run in warm)  # fmt: skip
        values["warm_seeds"] = len(warm)
        values["warm_brand_hits"] = ", ".join(f"{run['warm_brand_hit']:.1f}% (seed {run['seed']})" for run in warm)
        values["warm_season_hits"] = ", ".join(
            f"{run['warm_season_hit']:.1f}% against {run['warm_season_position_only']:.1f}% (seed {run['seed']})"
            for run in warm
        )
    compared = [key for key in RETRIEVAL_RUNS if key in by_key and "clip_ft" in by_key[key]]
    if len(compared) >= 2:
        values["retrieval_pairs"] = "; ".join(
            f"{by_key[key]['e2']['sumr']:.1f} against {by_key[key]['clip_ft']['sumr']:.1f} ({key[0]}, {key[1]})"
            for key in compared
        )
    gradient_runs = [run["e2"]["gradients"] for run in runs if "gradients" in run["e2"]]
    if gradient_runs:

        def smallest(names: tuple[str, ...]) -> float:
            return min(gradients[f"fusion{block}.{name}"]["region_loss"]
                       for gradients in gradient_runs for block in (0, 1) for name in names)  # fmt: skip

        values["fusion_qk_least_gradient"] = smallest(("q_proj", "k_proj"))
        values["fusion_v_least_gradient"] = smallest(("v_proj",))
    return values


if __name__ == "__main__":
    main()
