"""Benchmark 9: downstream systems on E2 against CLIP-FT, and the paper's ablations, on the synthetic catalog.

For each seed: a new catalog of the demo's test bed; from the shipped small pretrained CLIP, on the
same data and budget, E2 (the paper's recipe), its ablations (no fusion blocks, no region loss, each
entity's token group removed) and CLIP-FT. Then:

- ablations: full-candidate SumR and zero-shot regional tagging accuracy per entity (validation);
- captioning: on E2 and on CLIP-FT, a CapDec and a DeCap captioner trained on the training texts
  with the same decoder and budget, scored on the validation products' first views (BLEU@4, METEOR,
  ROUGE-L, CIDEr against the product text, attribute accuracy per entity);
- text-guided retrieval: triplets of validation products (a reference, a one-tag change, the
  products carrying the changed tag set); reference captioned (DeCap), rewritten by the rule-based
  tag rewriter, searched globally in an index of the validation products; R@1 and R@10 (a hit is a
  product with all four of the target's tags).

    python benchmarks/downstream.py [--seeds 3]
"""

import dataclasses
import itertools
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402
from report import mean_spread, table  # noqa: E402

from e2_hf.captioning import (  # noqa: E402
    CaptionerTrainingArguments,
    caption_catalog,
    load_captioner,
    score_captions,
    train_captioner,
)
from e2_hf.data import open_catalog  # noqa: E402
from e2_hf.demo import DEFAULT, PRETRAINED_BASE, QUICK, TESTBED, demo_training_arguments, prepare_base  # noqa: E402
from e2_hf.evaluation import embed_catalog, load_for_inference, retrieval_metrics  # noqa: E402
from e2_hf.search.build import add_catalog, open_or_create_index  # noqa: E402
from e2_hf.search.compose import compose_search  # noqa: E402
from e2_hf.synthetic import ENTITIES, make_synthetic  # noqa: E402
from e2_hf.tagging import catalog_candidates, tagging_accuracy  # noqa: E402
from e2_hf.training import train  # noqa: E402

# The paper's recipe (full attention, CLIP-style region loss): the ablations change one part of it.
MODELS = {
    "e2": {"baseline": "e2"},
    "e2_no_fusion": {"baseline": "e2", "fusion_layers": []},
    "e2_no_region_loss": {"baseline": "e2", "region_loss_weight": 0.0},
    **{f"e2_without_{entity}": {"baseline": "e2", "entities": [name for name in ENTITIES if name != entity]}
       for entity in ENTITIES},
    "clip_ft": {"baseline": "clip-ft"},
}  # fmt: skip
TOY_MODELS = ("e2", "clip_ft")  # --toy: enough to run every part of the script and the report
TOY_RECIPES = ("decap",)
BACKBONES = ("e2", "clip_ft")
RECIPES = ("capdec", "decap")
# The demo's sizes with a shorter schedule, so that 9 models x 3 seeds fit the machine.
BENCH_EPOCHS = {"warmup_epochs": 2, "epochs": 8}
CAPTIONER = {"decoder_layers": 4, "decoder_width": 128, "decoder_heads": 4, "epochs": 15, "batch_size": 64}
TOY_CAPTIONER = {"decoder_layers": 2, "decoder_width": 64, "decoder_heads": 2, "epochs": 3, "batch_size": 32}
TRIPLETS = 200
MODIFICATIONS = {"brand": "by {}", "season": "from the {} season", "subcategory": "as {}", "composition": "in {}"}


def ablation_scores(model_dir: Path, catalog_dir: Path) -> dict:
    """Full-candidate SumR and regional (else global) zero-shot tagging accuracy per entity."""
    model, processor, device, dtype = load_for_inference(model_dir, "cpu")
    catalog = open_catalog(f"jsonl:{catalog_dir / 'catalog.jsonl'}:validation")
    embeddings = embed_catalog(model, processor, catalog, device=device, dtype=dtype)
    entities = model.config.entities or list(ENTITIES)
    tagging = tagging_accuracy(model, processor, embeddings, catalog_candidates(catalog, entities), device)
    source = "region" if model.config.entities else "global"
    return {
        "sumr": retrieval_metrics(embeddings.image_embeds, embeddings.text_embeds)["sumr"],
        "tagging": {entity: tagging[entity][source] for entity in entities},
        "tagging_chance": {entity: tagging[entity]["chance"] for entity in entities},
    }


def captioning_scores(model_dir: Path, catalog_dir: Path, folder: Path, toy: bool, seed: int) -> dict:
    """Both recipes (--toy: DeCap) on one backbone: trained on the training texts, scored on validation images."""
    scores = {}
    model, processor, _, _ = load_for_inference(model_dir, "cpu")
    for recipe in TOY_RECIPES if toy else RECIPES:
        output = folder / recipe
        settings = {**(TOY_CAPTIONER if toy else CAPTIONER), "recipe": recipe, "seed": seed}
        train_captioner(CaptionerTrainingArguments(model=str(model_dir), output_dir=str(output),
                                                   train_data=f"jsonl:{catalog_dir / 'catalog.jsonl'}:train",
                                                   **settings), log=print)  # fmt: skip
        captioned = caption_catalog(load_captioner(output, model), model, processor,
                                    f"jsonl:{catalog_dir / 'catalog.jsonl'}:validation")  # fmt: skip
        scores[recipe] = score_captions(captioned, ENTITIES)
        scores[recipe]["examples"] = [item.to_json() for item in captioned[:3]]
    return scores


def triplets(catalog_dir: Path, count: int, seed: int) -> list[tuple[int, str, str, dict]]:
    """`(reference row, changed entity, modification, target tags)`: pairs of validation products
    whose tags differ in exactly one entity, up to `count / 4` per entity."""
    catalog = open_catalog(f"jsonl:{catalog_dir / 'catalog.jsonl'}:validation")
    tags = [{entity: product.tags[entity] for entity in ENTITIES} for product in catalog.products]
    by_entity: dict[str, set] = {entity: set() for entity in ENTITIES}
    for reference, target in itertools.permutations(range(len(tags)), 2):
        changed = [entity for entity in ENTITIES if tags[reference][entity] != tags[target][entity]]
        if len(changed) == 1:  # one triplet per reference and target tag set
            by_entity[changed[0]].add((reference, tuple(tags[target].items())))
    rng = random.Random(seed)
    chosen = []
    for entity, pool in by_entity.items():
        for reference, target in rng.sample(sorted(pool), min(len(pool), count // len(ENTITIES))):
            target = dict(target)
            chosen.append((reference, entity, MODIFICATIONS[entity].format(target[entity]), target))
    return chosen


def recall(ranks: list[int | None], k: int) -> float | None:
    return 100.0 * sum(rank is not None and rank <= k for rank in ranks) / len(ranks) if ranks else None


def composed_retrieval(model_dir: Path, captioner_dir: Path, catalog_dir: Path, folder: Path, seed: int,
                       count: int) -> dict:  # fmt: skip
    """R@1 and R@10 of caption -> tag rewrite -> global text search, overall and per changed entity."""
    model, processor, device, dtype = load_for_inference(model_dir, "cpu")
    spec = f"jsonl:{catalog_dir / 'catalog.jsonl'}:validation"
    index = open_or_create_index(folder / "index", model, str(model_dir), 32)
    add_catalog(index, model, processor, spec, 64, device, dtype)
    catalog = open_catalog(spec)
    chosen = triplets(catalog_dir, count, seed)
    images = [catalog.load_image(reference) for reference, _, _, _ in chosen]
    results = compose_search(model, processor, load_captioner(captioner_dir, model), index, images,
                             [modification for _, _, modification, _ in chosen], top_k=10)  # fmt: skip
    ranks = []
    for (_, _, _, target), result in zip(chosen, results):
        found = [all(hit.item.tags.get(entity) == value for entity, value in target.items()) for hit in result.hits]
        ranks.append(found.index(True) + 1 if any(found) else None)
    by_entity = {entity: [rank for (_, changed, _, _), rank in zip(chosen, ranks) if changed == entity]
                 for entity in ENTITIES}  # fmt: skip
    return {
        "triplets": len(chosen),
        "R@1": recall(ranks, 1),
        "R@10": recall(ranks, 10),
        "R@10_by_changed_entity": {entity: recall(found, 10) for entity, found in by_entity.items()},
        "examples": [
            {"modification": modification, "caption": result.caption, "rewritten": result.rewritten}
            for (_, _, modification, _), result in zip(chosen[:3], results)
        ],  # fmt: skip
    }


def one_seed(seed: int, size, folder: Path, base: str | None, toy: bool) -> dict:
    catalog_dir = folder / "catalog"
    make_synthetic(catalog_dir, products=size.products, seed=seed, views=3, image_size=size.image_size, hard=True,
                   progress=False, **TESTBED)  # fmt: skip
    pretrained = base is not None
    base = base or prepare_base(folder, catalog_dir, size, seed)
    result: dict = {"ablations": {}, "captioning": {}, "composed_retrieval": {}}
    for name, overrides in MODELS.items():
        if toy and name not in TOY_MODELS:
            continue
        run_dir = folder / "runs" / name
        train(demo_training_arguments(base, catalog_dir, run_dir, size, seed, pretrained=pretrained, eval_data=None,
                                      **overrides))  # fmt: skip
        result["ablations"][name] = ablation_scores(run_dir / "model", catalog_dir)
        print(f"seed {seed} {name}: {result['ablations'][name]}", flush=True)
    for backbone in BACKBONES:
        model_dir = folder / "runs" / backbone / "model"
        captioners = folder / "captioners" / backbone
        result["captioning"][backbone] = captioning_scores(model_dir, catalog_dir, captioners, toy, seed)
        result["composed_retrieval"][backbone] = composed_retrieval(
            model_dir, captioners / "decap", catalog_dir, folder / "composed" / backbone, seed, 8 if toy else TRIPLETS
        )
        print(f"seed {seed} {backbone}: captioning "
              f"{ {recipe: round(row['bleu4'], 3) for recipe, row in result['captioning'][backbone].items()} }, "
              f"composed {result['composed_retrieval'][backbone]}", flush=True)  # fmt: skip
    return result


def mean_std(values: list[float]) -> dict:
    values = [value for value in values if value is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(per_seed: list[dict]) -> dict:
    ablations = {}
    for name in per_seed[0]["ablations"]:
        runs = [run["ablations"][name] for run in per_seed]
        ablations[name] = {
            "sumr": mean_std([run["sumr"] for run in runs]),
            "tagging": {entity: mean_std([run["tagging"].get(entity) for run in runs]) for entity in ENTITIES},
        }
    captioning = {
        backbone: {
            recipe: {
                **{metric: mean_std([run["captioning"][backbone][recipe][metric] for run in per_seed])
                   for metric in ("bleu4", "meteor", "rouge_l", "cider")},
                "attribute_accuracy": {
                    entity: mean_std([run["captioning"][backbone][recipe]["attribute_accuracy"][entity]
                                      for run in per_seed])
                    for entity in ENTITIES
                },
            }
            for recipe in per_seed[0]["captioning"][backbone]
        }
        for backbone in BACKBONES
    }  # fmt: skip
    composed = {
        backbone: {metric: mean_std([run["composed_retrieval"][backbone][metric] for run in per_seed])
                   for metric in ("R@1", "R@10")}
        for backbone in BACKBONES
    }  # fmt: skip
    return {"ablations": ablations, "captioning": captioning, "composed_retrieval": composed}


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--seeds", type=int, default=3)
    args = arguments.parse_args()
    size = QUICK if args.toy else dataclasses.replace(DEFAULT, **BENCH_EPOCHS)
    base = None if args.toy else str(PRETRAINED_BASE)
    seeds = list(range(1 if args.toy else args.seeds))
    per_seed = []
    for seed in seeds:
        folder = Path(tempfile.mkdtemp(prefix=f"e2-downstream-{seed}-"))
        per_seed.append({"seed": seed, "result": one_seed(seed, size, folder, base, args.toy)})
        shutil.rmtree(folder, ignore_errors=True)
        write_result(  # after every seed, so that a long run leaves its finished seeds
            "downstream",
            {
                "setting": f"synthetic catalog --hard with the demo's test bed {TESTBED}, {size.products} products "
                f"(80/20 split), {size.image_size} px, {size.patch_size} px patches; start: "
                f"{'the shipped small pretrained CLIP' if base else 'a small random CLIP'} (width {size.width}, "
                f"{size.layers} vision layers); {size.warmup_epochs}+{size.epochs} epochs, batch {size.batch_size}; "
                f"E2: the paper's recipe; captioners: {TOY_CAPTIONER if args.toy else CAPTIONER}, trained on the "
                f"training split's product texts; seeds {[run['seed'] for run in per_seed]}",
                "seeds_planned": seeds,
                "summary": summarise([run["result"] for run in per_seed]),
                "per_seed": per_seed,
            },
            args.output,
        )


# ---------------------------------------------------------------- its section of BENCHMARKS.md
DOWNSTREAM_METRICS = {"bleu4": "BLEU@4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr"}
DOWNSTREAM_ENTITIES = ("brand", "season", "subcategory", "composition")
ABLATION_NAMES = {"e2": "E2 (the paper's recipe)", "e2_no_fusion": "without fusion blocks",
                  "e2_no_region_loss": "without region loss", "clip_ft": "CLIP-FT (no selection tokens)"}  # fmt: skip


def render(result: dict) -> list[str]:
    summary, seeds = result["summary"], len(result["per_seed"])
    captioning = summary["captioning"]
    caption_rows = []
    for backbone, recipes in captioning.items():
        for recipe, row in recipes.items():
            caption_rows.append([backbone.replace("_", "-").upper(), recipe,
                                 *[mean_spread(row[metric], digits=3) for metric in DOWNSTREAM_METRICS],
                                 *[mean_spread(row["attribute_accuracy"][entity], 100) for entity in
                                   DOWNSTREAM_ENTITIES]])  # fmt: skip
    comparisons = []
    for recipe in captioning["e2"]:
        e2, clip_ft = captioning["e2"][recipe], captioning["clip_ft"][recipe]
        comparisons.append(f"{recipe}: " + "; ".join(
            [e2_versus_clip_ft(e2[metric], clip_ft[metric], name) for metric, name in DOWNSTREAM_METRICS.items()]
            + [e2_versus_clip_ft(e2["attribute_accuracy"][entity], clip_ft["attribute_accuracy"][entity],
                                 f"{entity} named (points)", 100) for entity in DOWNSTREAM_ENTITIES]))  # fmt: skip
    composed = summary["composed_retrieval"]
    first = result["per_seed"][0]["result"]
    composed_rows = [[backbone.replace("_", "-").upper(), mean_spread(row["R@1"]), mean_spread(row["R@10"]),
                      ", ".join(f"{entity} {value:.0f}" for entity, value in
                                first["composed_retrieval"][backbone]["R@10_by_changed_entity"].items()
                                if value is not None)]
                     for backbone, row in composed.items()]  # fmt: skip
    ablation_rows = []
    for name, row in summary["ablations"].items():
        label = ABLATION_NAMES.get(name) or f"without the {name.removeprefix('e2_without_')} token group"
        ablation_rows.append([label, mean_spread(row["sumr"]),
                              *[mean_spread(row["tagging"][entity]) for entity in DOWNSTREAM_ENTITIES]])  # fmt: skip
    examples = [f"- E2 {recipe}: \"{item['caption']}\" — truth: \"{item['reference']}\""
                for recipe, row in first["captioning"]["e2"].items() for item in row["examples"][:2]]  # fmt: skip
    rewrites = first["composed_retrieval"]["e2"]["examples"][:2]
    triplet_examples = [f"- \"{item['modification']}\": caption \"{item['caption']}\" -> "
                        f"searched \"{item['rewritten']}\"" for item in rewrites]  # fmt: skip
    return [
        "## 9. Downstream: captioning, text-guided retrieval and the paper's ablations",
        "",
        f"Setting: {result['setting']}. Mean ± standard deviation over {seeds} seed(s); each seed has its own "
        "catalog and trains every model from the same start on the same data and budget.",
        "",
        "Zero-shot captioning of the validation products' first views (scores against the product text; "
        "attribute accuracy: the share of captions naming the product's own tag, in percent):",
        "",
        *table(
            [
                "backbone",
                "recipe",
                *DOWNSTREAM_METRICS.values(),
                *[f"{entity} named %" for entity in DOWNSTREAM_ENTITIES],
            ],
            caption_rows,
        ),  # fmt: skip
        "",
        *[f"- {line}" for line in comparisons],
        "",
        "Text-guided retrieval (a reference product, a one-tag change, the products carrying the changed tags; "
        "DeCap caption, tag rewriter, global search of the validation products; percent):",
        "",
        *table(["backbone", "R@1", "R@10", "R@10 by changed entity (first seed)"], composed_rows),
        "",
        "- "
        + "; ".join(
            e2_versus_clip_ft(composed["e2"][metric], composed["clip_ft"][metric], metric) for metric in ("R@1", "R@10")
        ),  # fmt: skip
        "",
        "Ablations (full-candidate SumR of the validation products; zero-shot tagging accuracy in percent "
        "from each entity's regional embedding, CLIP-FT's from the global one; — where the entity has no tokens):",
        "",
        *table(["model", "SumR", *[f"{entity} tagging" for entity in DOWNSTREAM_ENTITIES]], ablation_rows),
        "",
        "Captions of the first seed (E2 backbone), beside the product text:",
        "",
        *examples,
        "",
        "Rewrites of the first seed (E2 backbone):",
        "",
        *triplet_examples,
        "",
    ]


def e2_versus_clip_ft(e2: dict, clip_ft: dict, name: str, scale: float = 1.0) -> str:
    """E2's mean against CLIP-FT's, and whether the gap exceeds the larger standard deviation."""
    if e2["mean"] is None or clip_ft["mean"] is None:
        return f"{name}: not measured"
    difference = scale * (e2["mean"] - clip_ft["mean"])
    if difference == 0:
        return f"{name}: E2 level with CLIP-FT"
    within = abs(difference) <= scale * max(e2["std"], clip_ft["std"])
    return (f"{name}: E2 {'ahead of' if difference > 0 else 'behind'} CLIP-FT by {abs(difference):.3g}"
            + (" (within one std)" if within else ""))  # fmt: skip


if __name__ == "__main__":
    main()
