"""Pretrain the small CLIP that `e2-hf demo` and benchmark 4 start from (as the paper starts from CLIP).

The paper fine-tunes E2 from pretrained CLIP, whose text tower tells brand names apart and whose
patch features already respond to logos. A small CLIP trained from random weights on the demo's
catalog has neither: its brand tag texts collapse onto one embedding and its brand tokens learn
nothing (BENCHMARKS.md, "Making the regions real"). This script makes a small stand-in for
pretrained CLIP on this machine, with no network:

1. a large *generic* synthetic catalog (every silhouette, colour and fabric; `--hard` off) with
   alt-text-like captions (a tag alone, a few words, or the full product text, as web captions
   are), in the test bed's image style (`e2_hf.demo.TESTBED`);
2. a CLIP-format BPE tokenizer learned from its texts;
3. a randomly initialised small CLIP trained contrastively on it (the CLIP-FT recipe);
4. saved as a plain transformers `CLIPModel` folder in float16 (weights about 4 MB) with the
   tokenizer, CLIP's image preprocessing and `pretraining.json` (settings, seconds, machine,
   the last epoch's validation SumR on the pretraining captions).

    python benchmarks/pretrain_small_clip.py [--output-dir e2_hf/assets/small-clip-synthetic]

The catalog seed (1000) differs from the demo's seeds, so no demo product is seen in pretraining.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "e2_hf" / "assets" / "small-clip-synthetic"
PRETRAINING = {"products": 6000, "seed": 1000, "epochs": 30, "batch_size": 128, "lr": 1e-3, "warmup_steps": 100}


def to_clip(e2_model_dir: Path):
    """An entity-less E2 checkpoint (CLIP-FT) as a transformers `CLIPModel` with the same weights."""
    from transformers import CLIPConfig, CLIPModel

    from e2_hf.modeling import E2CLIPModel

    e2 = E2CLIPModel.from_pretrained(e2_model_dir)
    config = CLIPConfig(
        text_config=e2.config.text_config.to_dict(),
        vision_config=e2.config.vision_config.to_dict(),
        projection_dim=e2.config.projection_dim,
        logit_scale_init_value=e2.config.logit_scale_init_value,
    )
    clip = CLIPModel(config)
    state = {key: value for key, value in e2.state_dict().items() if not key.endswith("position_ids")}
    incompatible = clip.load_state_dict(state, strict=False)
    if incompatible.unexpected_keys or [key for key in incompatible.missing_keys if "position_ids" not in key]:
        raise RuntimeError(f"CLIP and E2 weights differ: {incompatible}")
    return clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--products", type=int, default=PRETRAINING["products"])
    parser.add_argument("--epochs", type=int, default=PRETRAINING["epochs"])
    parser.add_argument("--batch-size", type=int, default=PRETRAINING["batch_size"])
    parser.add_argument("--work-dir", help="keep the catalog and the run here (default: a temporary folder)")
    args = parser.parse_args()
    settings = {**PRETRAINING, "products": args.products, "epochs": args.epochs, "batch_size": args.batch_size}

    import torch

    from e2_hf.demo import DEFAULT, TESTBED, demo_training_arguments, prepare_base
    from e2_hf.modeling import clip_image_processor
    from e2_hf.synthetic import make_synthetic
    from e2_hf.training import train

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="e2-pretrain-"))
    start = time.perf_counter()
    catalog_dir = work / "catalog"
    make_synthetic(catalog_dir, products=settings["products"], seed=settings["seed"], views=3,
                   image_size=DEFAULT.image_size, hard=False, captions="varied", **TESTBED)  # fmt: skip
    size = dataclasses.replace(DEFAULT)
    random_base = prepare_base(work, catalog_dir, size, settings["seed"])
    run_dir = work / "run"
    summary = train(demo_training_arguments(
        random_base, catalog_dir, run_dir, size, settings["seed"], baseline="clip-ft", warmup_epochs=0,
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
        warmup_steps=settings["warmup_steps"], text_fields=["description"],
    ))  # fmt: skip
    # full-candidate SumR of the pretraining catalog's validation products against their captions
    # (often a single tag, shared by many products: far from 600 even for a perfect model)
    caption_sumr = summary["history"][-1]["sumr"]
    seconds = time.perf_counter() - start

    output = Path(args.output_dir)
    shutil.rmtree(output, ignore_errors=True)
    clip = to_clip(run_dir / "model").to(torch.float16)
    clip.save_pretrained(output)
    for path in (work / "tokenizer").iterdir():  # vocab.json + merges.txt: every transformers version reads them
        shutil.copy(path, output / path.name)
    clip_image_processor(size.image_size).save_pretrained(output)
    record = {
        "what": "a small CLIP pretrained on a generic synthetic catalog with alt-text-like captions",
        "catalog": {"products": settings["products"], "seed": settings["seed"], "views": 3, "hard": False,
                    "captions": "varied", "image_size": size.image_size, **TESTBED},
        "model": {"width": size.width, "vision_layers": size.layers, "text_layers": size.text_layers,
                  "image_size": size.image_size, "patch_size": size.patch_size},
        "training": {key: settings[key] for key in ("epochs", "batch_size", "lr", "warmup_steps")},
        "validation_caption_sumr": caption_sumr,
        "seconds": seconds,
        "machine": machine(),
    }  # fmt: skip
    (output / "pretraining.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
