"""Why do the selection tokens miss the logo? Named experiments: a test bed x a recipe x a seed.

Each experiment writes a synthetic catalog (with ground-truth detail boxes), learns a tokenizer,
builds a small random CLIP (or takes a pretrained small base), trains E2 (and, with `--clip-ft`,
CLIP-FT on the same data and budget) and scores: the selection metrics per entity (hit rate,
chance, position-only, collapse, interventions), zero-shot tagging per entity (regional and
global) and full-candidate SumR. One JSON per experiment under `--output-dir`, then a summary.

    python benchmarks/selection_experiments.py --testbed demo --recipe paper --seeds 0 1
    python benchmarks/selection_experiments.py --testbed grid8 --recipe paper multi_positive --jobs 8 --device cuda

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

# The catalog and model sizes of a test bed (DemoSize fields plus make_synthetic options).
TESTBEDS = {
    "demo": {},  # the 0.1 demo: 48 brands, 8 px logo, 64 px images, 16 px patches (4x4 grid), tight framing
    "demo_varied": {"framing": "varied"},
    "grid8": {"patch_size": 8, "framing": "varied"},
    "grid8_b12": {"patch_size": 8, "framing": "varied", "brands": 12},
    "grid8_b12_logo12": {"patch_size": 8, "framing": "varied", "brands": 12, "logo_size": 12},
    "grid4_b12_logo12": {"framing": "varied", "brands": 12, "logo_size": 12},
    "grid8_b24": {"patch_size": 8, "framing": "varied", "brands": 24},
}
# Pretrained bases: a small random CLIP trained with the CLIP-FT recipe on a large synthetic catalog
# of the test bed's style (another seed), then E2 and CLIP-FT fine-tuned from the same weights, as
# the paper starts from pretrained CLIP. `hard`: the pretraining catalog collides on all but the
# details (so matching texts needs the logo and the trim); `generic`: every silhouette, colour and fabric.
PRETRAININGS = {
    "hard": {"products": 10000, "hard": True, "epochs": 40, "batch_size": 256, "lr": 1e-3},
    "generic": {"products": 10000, "hard": False, "epochs": 40, "batch_size": 256, "lr": 1e-3},
}
# Training settings on top of the demo's (TrainingArguments fields); `pretrain` names a base above.
RECIPES = {
    "paper": {},
    "multi_positive": {"region_loss": "multi_positive"},
    "mp_long_warmup": {"region_loss": "multi_positive", "warmup_epochs": 6, "epochs": 14},
    "mp_fast_new": {"region_loss": "multi_positive", "warmup_lr": 5e-3},
    "pretrained_hard_mp": {"pretrain": "hard", "region_loss": "multi_positive", "warmup_lr": 5e-4, "lr": 1e-4},
    "pretrained_hard_paper": {"pretrain": "hard", "warmup_lr": 5e-4, "lr": 1e-4},
    "pretrained_generic_mp": {"pretrain": "generic", "region_loss": "multi_positive", "warmup_lr": 5e-4, "lr": 1e-4},
}


def testbed_sizes(testbed: str, toy: bool):
    """(DemoSize, make_synthetic options) of a test bed."""
    from e2_hf.demo import DEFAULT, QUICK

    settings = dict(TESTBEDS[testbed])
    catalog_options = {key: settings.pop(key) for key in ("brands", "logo_size", "framing") if key in settings}
    if toy:
        catalog_options.pop("logo_size", None)
        return QUICK, catalog_options
    return dataclasses.replace(DEFAULT, **settings), catalog_options


def pretrain_base(testbed: str, pretraining: str, output_dir: str, device: str, toy: bool, num_workers: int) -> str:
    """Trains (or finds) the pretrained base of a test bed; returns its model folder."""
    from e2_hf.demo import demo_training_arguments, prepare_base
    from e2_hf.synthetic import make_synthetic
    from e2_hf.training import train

    size, catalog_options = testbed_sizes(testbed, toy)
    settings = dict(PRETRAININGS[pretraining])
    if toy:
        settings.update(products=200, epochs=1, batch_size=32)
    root = Path(output_dir) / "bases" / f"{testbed}-{pretraining}"
    if (root / "run" / "model").is_dir():
        return str(root / "run" / "model")
    start = time.perf_counter()
    catalog_dir = root / "catalog"
    make_synthetic(catalog_dir, products=settings["products"], seed=1000, views=3, image_size=size.image_size,
                   hard=settings["hard"], progress=False, **catalog_options)  # fmt: skip
    random_base = prepare_base(root, catalog_dir, size, seed=1000)
    args = demo_training_arguments(random_base, catalog_dir, root / "run", size, 1000, baseline="clip-ft",
                                   warmup_epochs=0, epochs=settings["epochs"], batch_size=settings["batch_size"],
                                   lr=settings["lr"], eval_data=None, num_workers=num_workers)  # fmt: skip
    train(args)
    shutil.rmtree(catalog_dir / "images", ignore_errors=True)
    print(f"base {testbed}-{pretraining} in {time.perf_counter() - start:.0f}s", flush=True)
    return str(root / "run" / "model")


def run_experiment(testbed: str, recipe: str, seed: int, output_dir: str, device: str, clip_ft: bool,
                   toy: bool = False, base: str | None = None, num_workers: int = 0) -> dict:  # fmt: skip
    import torch

    from e2_hf.data import open_catalog
    from e2_hf.demo import demo_training_arguments, prepare_base
    from e2_hf.evaluation import embed_catalog, load_for_inference, retrieval_metrics
    from e2_hf.evaluation.selection import selection_metrics
    from e2_hf.synthetic import make_synthetic
    from e2_hf.tagging import tagging_accuracy
    from e2_hf.training import train

    if device == "cuda":
        torch.set_num_threads(1)
    size, catalog_options = testbed_sizes(testbed, toy)
    root = Path(output_dir) / f"{testbed}-{recipe}-s{seed}"
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    catalog_dir = root / "catalog"
    make_synthetic(catalog_dir, products=size.products, seed=seed, views=3, image_size=size.image_size, hard=True,
                   progress=False, **catalog_options)  # fmt: skip
    recipe_settings = {key: value for key, value in RECIPES[recipe].items() if key != "pretrain"}
    base = base or prepare_base(root, catalog_dir, size, seed)
    eval_spec = f"jsonl:{catalog_dir / 'catalog.jsonl'}:validation"
    result = {"testbed": testbed, "recipe": recipe, "seed": seed, "testbed_settings": TESTBEDS[testbed],
              "recipe_settings": RECIPES[recipe], "device": device}  # fmt: skip
    for baseline in ("e2", "clip-ft") if clip_ft else ("e2",):
        overrides = dict(recipe_settings) if baseline == "e2" else {}
        if "pretrain" in RECIPES[recipe]:  # both fine-tune from the pretrained base at the same learning rates
            overrides.update(lr=recipe_settings["lr"], warmup_lr=recipe_settings["warmup_lr"])
        args = demo_training_arguments(base, catalog_dir, root / baseline, size, seed, baseline=baseline,
                                       num_workers=num_workers, **overrides)  # fmt: skip
        train(args)
        model, processor, model_device, dtype = load_for_inference(root / baseline / "model", device)
        catalog = open_catalog(eval_spec)
        embeddings = embed_catalog(model, processor, catalog, device=model_device, dtype=dtype)
        entry = {"sumr": retrieval_metrics(embeddings.image_embeds, embeddings.text_embeds)["sumr"]}
        candidates = {entity: sorted({t for t in catalog.tag_values(entity) if t})
                      for entity in ("brand", "season", "subcategory", "composition")}  # fmt: skip
        entry["tagging"] = tagging_accuracy(model, processor, embeddings, candidates, model_device)
        if baseline == "e2":
            entry["selection"] = selection_metrics(model, processor, catalog_dir / "catalog.jsonl")
        result[baseline.replace("-", "_")] = entry
    result["seconds"] = time.perf_counter() - start
    for name in ("e2", "clip-ft"):  # keep the JSON and the models, drop the bulk
        shutil.rmtree(root / name / "checkpoints", ignore_errors=True)
    shutil.rmtree(catalog_dir / "images", ignore_errors=True)
    (root / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def summary_line(result: dict) -> str:
    e2 = result["e2"]
    parts = [f"{result['testbed']:>18} {result['recipe']:>16} s{result['seed']}", f"SumR {e2['sumr']:6.1f}"]
    for entity in ("brand", "season"):
        block = e2["selection"]["entities"][entity]["blocks"][-1]
        parts.append(f"{entity} hit {block['hit']:.3f} (best {block['best_token_hit']:.3f}) chance {block['chance']:.3f} "
                     f"pos-only {block['position_only']:.3f}")  # fmt: skip
    parts.append(f"tag brand R {e2['tagging']['brand']['region']:.1f} G {e2['tagging']['brand']['global']:.1f} "
                 f"chance {e2['tagging']['brand']['chance']:.1f}")  # fmt: skip
    if "clip_ft" in result:
        parts.append(f"CLIP-FT SumR {result['clip_ft']['sumr']:.1f} brand G {result['clip_ft']['tagging']['brand']['global']:.1f}")
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
    args = parser.parse_args()
    if args.plan:
        runs = [tuple(run) for run in json.loads(Path(args.plan).read_text())]
    else:
        runs = list(itertools.product(args.testbed, args.recipe, args.seeds))
    os.makedirs(args.output_dir, exist_ok=True)
    common = dict(output_dir=args.output_dir, device=args.device, clip_ft=args.clip_ft, toy=args.toy,
                  num_workers=args.num_workers)  # fmt: skip
    results = []

    def record(result: dict) -> None:
        results.append(result)
        print(summary_line(result), flush=True)
        if args.results:
            with open(args.results, "a") as handle:
                handle.write(json.dumps(result) + "\n")

    with ProcessPoolExecutor(args.jobs) as pool:
        bases = {}
        for testbed, recipe, _ in runs:  # pretrained bases first: the runs that need one wait for it
            pretraining = RECIPES[recipe].get("pretrain")
            if pretraining and (testbed, pretraining) not in bases:
                bases[testbed, pretraining] = pool.submit(
                    pretrain_base, testbed, pretraining, args.output_dir, args.device, args.toy,
                    max(3, args.num_workers),
                )
        pending = {}
        for testbed, recipe, seed in runs:
            if "pretrain" not in RECIPES[recipe]:
                pending[pool.submit(run_experiment, testbed, recipe, seed, **common)] = (testbed, recipe, seed)
        for key, future in bases.items():
            try:
                base = future.result()
            except Exception as error:
                print(f"pretraining {key} failed: {error!r}", flush=True)
                continue
            for testbed, recipe, seed in runs:
                if (testbed, RECIPES[recipe].get("pretrain")) == key:
                    future = pool.submit(run_experiment, testbed, recipe, seed, base=base, **common)
                    pending[future] = (testbed, recipe, seed)
        for future in as_completed(pending):
            try:
                record(future.result())
            except Exception as error:  # keep the other experiments going
                print(f"{pending[future]} failed: {error!r}", flush=True)
    print("\nall results:")
    for result in results:
        print(summary_line(result))


if __name__ == "__main__":
    main()
