"""The main job in one command: synthetic catalog -> small pretrained CLIP -> E2 and CLIP-FT
trained from it on the same data and budget -> both evaluated -> report.

    e2-hf demo --output-dir demo [--quick] [--base NAME_OR_PATH | --base random] [--seed 0]

Without `--base` the starting point is the small CLIP pretrained on a generic synthetic catalog
that ships with the package (`e2_hf/assets/small-clip-synthetic`, made by
`benchmarks/pretrain_small_clip.py`): the paper fine-tunes from pretrained CLIP, and no network
is needed. `--base random` starts from a randomly initialised small CLIP (with a tokenizer learned
from the catalog and larger learning rates); `--quick` always does, at a smaller size. Written to
`--output-dir`: `e2-model/`, `clip-ft-model/` (Hub-ready), `e2-captioner/` (a DeCap captioner on
E2, trained on the catalog's texts), `report.json`, `report.md` (retrieval, zero-shot tagging per
entity, where the selection tokens look against the catalog's ground truth, and a few generated
captions), `selection.png`, and the catalog and runs they came from.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data import open_catalog
from .images import open_image
from .modeling import clip_image_processor
from .synthetic import ENTITIES


@dataclass
class DemoSize:
    products: int
    image_size: int
    patch_size: int
    width: int
    layers: int
    text_layers: int
    fusion_layers: list[int]
    warmup_epochs: int
    epochs: int
    batch_size: int
    merges: int


# The demo's catalog: `make_synthetic(..., hard=True, **TESTBED)`. 8 px logos in 12 well-separated
# colours and a garment whose size and place vary (so the trim moves across patch rows); 8 px
# patches make the logo one patch wide on an 8x8 grid (why: BENCHMARKS.md, "Making the regions real").
TESTBED = {"brands": 12, "logo_colours": "palette", "framing": "varied"}
# A small CLIP pretrained on a generic synthetic catalog (benchmarks/pretrain_small_clip.py): the
# demo's stand-in for pretrained CLIP, shipped with the package.
PRETRAINED_BASE = Path(__file__).resolve().parent / "assets" / "small-clip-synthetic"

# E2 options beyond the paper's recipe that the demo uses, each measured against the paper's
# default in BENCHMARKS.md ("Making the regions real").
E2_OPTIONS: dict[str, Any] = {"region_loss": "multi_positive", "selection_attention": "isolated"}
# Learning rates (stage 1: E2's new parameters only; stage 2: everything).
PRETRAINED_RATES = {"warmup_lr": 5e-4, "lr": 1e-4}
RANDOM_RATES = {"warmup_lr": 2e-3, "lr": 5e-4}
# The demo's captioner: DeCap on E2's embeddings, a small GPT-2 trained from scratch on the
# training texts only (docs/captioning.md); QUICK_CAPTIONER for --quick.
CAPTIONER = {"recipe": "decap", "decoder_layers": 4, "decoder_width": 128, "decoder_heads": 4, "epochs": 15}
QUICK_CAPTIONER = {"recipe": "decap", "decoder_layers": 2, "decoder_width": 64, "decoder_heads": 2, "epochs": 3}
CAPTION_EXAMPLES = 3

DEFAULT = DemoSize(
    products=1200,
    image_size=64,
    patch_size=8,
    width=128,
    layers=6,
    text_layers=3,
    fusion_layers=[3, 4],
    warmup_epochs=4,
    epochs=16,
    batch_size=32,
    merges=1500,
)
QUICK = DemoSize(
    products=160,
    image_size=32,
    patch_size=8,
    width=64,
    layers=4,
    text_layers=2,
    fusion_layers=[1, 2],
    warmup_epochs=1,
    epochs=2,
    batch_size=16,
    merges=400,
)


def make_small_clip(
    output_dir: str | Path,
    tokenizer,
    image_size: int = 64,
    patch_size: int = 16,
    width: int = 128,
    layers: int = 6,
    heads: int = 4,
    text_layers: int = 3,
    projection_dim: int = 128,
    seed: int = 0,
) -> Path:
    """A randomly initialised transformers CLIP of small sizes, saved with `tokenizer` and CLIP's
    image preprocessing: a stand-in for a pretrained CLIP on machines without network."""
    from transformers import CLIPConfig, CLIPModel

    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": text_layers,
        "num_attention_heads": heads,
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image_size,
        "patch_size": patch_size,
    }
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=projection_dim))
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    clip_image_processor(image_size).save_pretrained(output_dir)
    return output_dir


def evaluate_model(model_dir: Path, catalog_dir: Path, device: str = "cpu", probe_seed: int | None = None):
    """A saved model on a synthetic catalog's validation products (first views): full-candidate
    and sample-100 retrieval, zero-shot tagging per entity (the catalog's distinct tags as
    candidates), for E2 where its selection tokens look, and with `probe_seed` linear probes per
    entity on the global image embeddings."""
    from .evaluation import (
        embed_catalog,
        linear_probe_accuracy,
        load_for_inference,
        retrieval_metrics,
        sample100_metrics,
    )
    from .evaluation.selection import selection_metrics
    from .tagging import catalog_candidates, tagging_accuracy

    model, processor, device, dtype = load_for_inference(model_dir, device)
    catalog = open_catalog(f"jsonl:{catalog_dir / 'catalog.jsonl'}:validation")
    embeddings = embed_catalog(model, processor, catalog, device=device, dtype=dtype)
    images, texts = embeddings.image_embeds, embeddings.text_embeds
    subcategories = [product.tags.get("subcategory") or "" for product in catalog.products]
    result = {
        "full": retrieval_metrics(images, texts),
        "sample100": sample100_metrics(images, texts, subcategories, queries=1000, seeds=5),
        "tagging": tagging_accuracy(model, processor, embeddings, catalog_candidates(catalog, ENTITIES), device),
    }
    if probe_seed is not None:
        result["linear_probe"] = {
            entity: linear_probe_accuracy(images, catalog.tag_values(entity), seed=probe_seed)["accuracy"]
            for entity in ENTITIES
        }
    if model.config.entities:
        result["selection"] = selection_metrics(model, processor, catalog_dir / "catalog.jsonl")
    return result


def draw_selection(model_dir: Path, catalog_dir: Path, output_path: Path, count: int = 3) -> None:
    """`e2-hf visualize` on the first validation products, each beside its copy with the logo
    moved: every entity's chosen patches per fusion block, and the CLS token's attention."""
    from .evaluation.selection import read_ground_truth, read_interventions
    from .modeling import E2CLIPModel, E2CLIPProcessor
    from .visualization import render_selection_figure, selection_maps

    model = E2CLIPModel.from_pretrained(model_dir).eval()
    processor = E2CLIPProcessor.from_pretrained(model_dir)
    views = read_ground_truth(catalog_dir / "catalog.jsonl")
    original = {view.key: view for view in views}
    moved = [view for edit, view in read_interventions(catalog_dir / "catalog.jsonl") if edit == "logo_moved"][:count]
    paths, titles = [], []
    for view in moved:
        paths += [original[view.key].image_path, view.image_path]
        titles += [f"product {view.key[0]}", f"product {view.key[0]}, logo moved"]
    if not paths:  # no logo could be moved: the first validation views alone
        first_views = [view for view in views if view.key[1] == 0][:count]
        paths, titles = [view.image_path for view in first_views], [f"product {v.key[0]}" for v in first_views]
    images = [open_image(path) for path in paths]
    render_selection_figure(selection_maps(model, processor, images), titles).image.save(output_path)


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# E2 vs CLIP-FT on the synthetic catalog (--hard)",
        "",
        f"Catalog: {report['catalog']['train_products']} training and {report['catalog']['validation_products']} "
        f"validation products, {report['catalog']['views']} views each, {report['catalog']['image_size']} px. "
        f"Same data, model size and training budget for both. Recalls in percent on the validation products.",
        "",
        "| model | protocol | I2T R@1 | I2T R@5 | I2T R@10 | T2I R@1 | T2I R@5 | T2I R@10 | SumR |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, name in (("e2", "E2"), ("clip_ft", "CLIP-FT")):
        for protocol in ("full", "sample100"):
            block = report[key][protocol]
            cells = [
                block[direction][k] for direction in ("image_to_text", "text_to_image") for k in ("R@1", "R@5", "R@10")
            ]
            lines.append(
                f"| {name} | {protocol} | "
                + " | ".join(f"{value:.1f}" for value in cells)
                + f" | {block['sumr']:.1f} |"
            )
    lines += ["", *tagging_lines(report)]
    if "selection" in report["e2"]:
        lines += ["", *selection_lines(report["e2"]["selection"])]
    if "captioning" in report:
        lines += ["", *caption_lines(report["captioning"])]
    seconds = report["seconds"]
    captioning = f", captioner {seconds['captioning']:.0f}" if "captioning" in seconds else ""
    lines += [
        "",
        f"Seconds: catalog {seconds['catalog']:.0f}, E2 training {seconds['train_e2']:.0f}, "
        f"CLIP-FT training {seconds['train_clip_ft']:.0f}, evaluation {seconds['evaluate']:.0f}{captioning}, "
        f"total {seconds['total']:.0f}.",
    ]
    return "\n".join(lines) + "\n"


def tagging_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        "Zero-shot tagging of the validation products (top-1 accuracy in percent; candidates: each entity's "
        "distinct validation tags). E2 regional: the entity's regional embedding; global: the image embedding.",
        "",
        "| entity | candidates | E2 regional | E2 global | CLIP-FT global | chance |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entity, row in report["e2"]["tagging"].items():
        clip_ft = report["clip_ft"]["tagging"][entity]["global"]
        lines.append(f"| {entity} | {row['candidates']} | {row['region']:.1f} | {row['global']:.1f} | {clip_ft:.1f} | "
                     f"{row['chance']:.1f} |")  # fmt: skip
    return lines


def selection_lines(selection: dict[str, Any]) -> list[str]:
    from .evaluation.selection import intervention_table, selection_table

    grid = "x".join(str(side) for side in selection["grid"])
    lines = [
        f"Where E2's selection tokens look (last fusion block, {selection['views']} validation views, {grid} "
        "patches; percent of views where a token of the entity chose a patch holding its detail; chance: a "
        "uniformly random patch; position-only: the token's own choice frequencies, ignoring the image).",
        "",
        selection_table(selection),
    ]
    if selection["interventions"]:
        lines += ["", "The same views with one detail edited (everything else equal):", "",
                  intervention_table(selection)]  # fmt: skip
    return lines


def prepare_base(output_dir: Path, catalog_dir: Path, size: DemoSize, seed: int) -> str:
    """A CLIP-format tokenizer learned from the catalog and a small random CLIP using it."""
    from .synthetic import all_texts
    from .tokenization import build_tokenizer_from_texts

    tokenizer = build_tokenizer_from_texts(all_texts(catalog_dir), output_dir / "tokenizer", size.merges, 64)
    return str(
        make_small_clip(
            output_dir / "base-clip",
            tokenizer,
            image_size=size.image_size,
            patch_size=size.patch_size,
            width=size.width,
            layers=size.layers,
            text_layers=size.text_layers,
            projection_dim=size.width,
            seed=seed,
        )
    )


def demo_training_arguments(
    base: str, catalog_dir: Path, output_dir: Path, size: DemoSize, seed: int, pretrained: bool = False, **overrides
):
    """The demo's training settings: the paper's two stages, with learning rates for the small
    pretrained base (or, with `pretrained=False`, for a small randomly initialised CLIP)."""
    from .training import TrainingArguments

    settings = dict(
        model=base,
        train_data=f"fashiongen:{catalog_dir / 'train.h5'}",
        eval_data=f"jsonl:{catalog_dir / 'catalog.jsonl'}:validation",
        output_dir=str(output_dir),
        fusion_layers=size.fusion_layers,
        warmup_epochs=size.warmup_epochs,
        epochs=size.epochs,
        batch_size=size.batch_size,
        warmup_steps=20,
        seed=seed,
        save_steps=10_000,
        log_steps=5,
        **(PRETRAINED_RATES if pretrained else RANDOM_RATES),
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def run_demo(output_dir: str | Path, quick: bool = False, base: str | None = None, seed: int = 0) -> dict[str, Any]:
    """`base`: None for the shipped pretrained small base (`--quick`: a small random CLIP),
    `"random"` for a small random CLIP, or any CLIP (Hub id or folder)."""
    from .conversion.push_to_hub import fresh_process_outputs
    from .synthetic import make_synthetic
    from .training import train

    size = QUICK if quick else DEFAULT
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    catalog_dir = output_dir / "catalog"
    catalog = make_synthetic(
        catalog_dir, products=size.products, seed=seed, views=3, image_size=size.image_size, hard=True, **TESTBED
    )
    seconds["catalog"] = time.perf_counter() - start
    pretrained = base is None and not quick
    if pretrained:
        base, base_name = str(PRETRAINED_BASE), "small CLIP pretrained on a generic synthetic catalog (shipped)"
    elif base is None or base == "random":
        base, base_name = prepare_base(output_dir, catalog_dir, size, seed), "small random CLIP"
    else:
        base_name = base
    models = {}
    for key, baseline in (("e2", "e2"), ("clip_ft", "clip-ft")):
        tick = time.perf_counter()
        options = E2_OPTIONS if baseline == "e2" else {}
        # no evaluation after every epoch: the demo keeps the final model and evaluates it once below
        arguments = demo_training_arguments(
            base, catalog_dir, output_dir / "runs" / key, size, seed, pretrained=pretrained, baseline=baseline,
            eval_data=None, **options,
        )  # fmt: skip
        train(arguments)
        seconds[f"train_{key}"] = time.perf_counter() - tick
        target = output_dir / ("e2-model" if key == "e2" else "clip-ft-model")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(output_dir / "runs" / key / "model", target)
        models[key] = target

    tick = time.perf_counter()
    fresh_process_outputs(str(models["e2"].resolve()))  # AutoModel(..., trust_remote_code=True) reloads it
    report = {key: evaluate_model(path, catalog_dir) for key, path in models.items()}
    seconds["evaluate"] = time.perf_counter() - tick
    draw_selection(models["e2"], catalog_dir, output_dir / "selection.png")
    tick = time.perf_counter()
    report["captioning"] = demo_captions(models["e2"], catalog_dir, output_dir / "e2-captioner", quick, seed)
    seconds["captioning"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - start
    report.update(
        catalog={k: v for k, v in catalog.items() if k != "output_dir"},
        seconds=seconds,
        quick=quick,
        base=base_name,
        e2_options=options_of(models["e2"]),
    )
    (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (output_dir / "report.md").write_text(report_markdown(report))
    return report


def demo_captions(model_dir: Path, catalog_dir: Path, output_dir: Path, quick: bool, seed: int) -> dict[str, Any]:
    """A DeCap captioner trained on the training texts, then the validation photos captioned:
    attribute accuracy per entity and a few captions beside their product texts."""
    from .captioning import (
        CaptionerTrainingArguments,
        attribute_accuracy,
        caption_catalog,
        load_captioner,
        train_captioner,
    )
    from .evaluation import load_for_inference

    catalog = catalog_dir / "catalog.jsonl"
    settings = QUICK_CAPTIONER if quick else CAPTIONER
    shutil.rmtree(output_dir, ignore_errors=True)
    train_captioner(CaptionerTrainingArguments(model=str(model_dir), train_data=f"jsonl:{catalog}:train",
                                               output_dir=str(output_dir), seed=seed, **settings),
                    log=lambda line: None)  # fmt: skip
    model, processor, _, _ = load_for_inference(model_dir, "cpu")
    captioned = caption_catalog(load_captioner(output_dir, model), model, processor, f"jsonl:{catalog}:validation")
    accuracy = attribute_accuracy([item.caption for item in captioned], [item.values for item in captioned], ENTITIES)
    return {"settings": settings, "captions": len(captioned), "attribute_accuracy": accuracy,
            "examples": [item.to_json() for item in captioned[:CAPTION_EXAMPLES]]}  # fmt: skip


def caption_lines(captioning: dict[str, Any]) -> list[str]:
    named = ", ".join(f"{entity} {100 * value:.1f}%" for entity, value in captioning["attribute_accuracy"].items()
                      if value is not None)  # fmt: skip
    lines = [
        f"Zero-shot captions of the {captioning['captions']} validation photos by a DeCap captioner on E2 "
        f"(`e2-captioner/`, trained on the training texts only). Captions naming the product's own tag: {named}.",
        "",
    ]
    for item in captioning["examples"]:
        lines += [f"- caption: {item['caption']}", f"  truth: {item['reference']}"]
    return lines


def options_of(model_dir: Path) -> dict[str, Any]:
    """The E2 settings of a trained model that the paper's recipe fixes (recorded in the report)."""
    config = json.loads((model_dir / "config.json").read_text())
    return {key: config.get(key) for key in ("region_loss", "selection_attention", "gumbel_tau", "fusion_layers")}
