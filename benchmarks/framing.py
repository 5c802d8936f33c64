"""Framing: does letterboxing portrait photos (`pad`) beat CLIP's centre crop (`crop`) for E2?

The demo's synthetic catalog, made portrait: every image is stretched to the aspect of the real
sample store's studio photos (1080x1340, height = 1.24 x width), so the garment fills a portrait
frame as it does in a studio photo, and its detail boxes move with it. `crop` then removes the top
and bottom tenth of each image (where some logos and trims are); `pad` keeps the whole image at 80%
of the resolution, on white bands. E2 is trained from the shipped small pretrained CLIP with the
demo's recipe, once per framing (same data, seed and budget), and evaluated on the portrait
validation products: full-candidate retrieval, zero-shot tagging and where the selection tokens
look. One seed (two ~4-minute trainings on a 2-core CPU).

    python benchmarks/framing.py [--output FILE] [--seed 0] [--toy]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402
from report import heading, table  # noqa: E402

from e2_hf.demo import (  # noqa: E402
    DEFAULT,
    E2_OPTIONS,
    PRETRAINED_BASE,
    QUICK,
    TESTBED,
    demo_training_arguments,
    evaluate_model,
    prepare_base,
)
from e2_hf.synthetic import make_synthetic  # noqa: E402
from e2_hf.training import train  # noqa: E402

PORTRAIT_ASPECT = 1340 / 1080  # height / width of the real catalog's photos


def portrait_catalog(square_dir: Path, output_dir: Path) -> dict[str, object]:
    """Copies a synthetic catalog with every image stretched to PORTRAIT_ASPECT (detail boxes scaled)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    lines, cut_details, details_total = [], 0, 0
    for line in (square_dir / "catalog.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        images, details = [], []
        for path, boxes in zip(record["images"], record["details"]):
            with Image.open(square_dir / path) as image:
                width, height = image.size
                portrait_height = round(height * PORTRAIT_ASPECT)
                image.convert("RGB").resize((width, portrait_height), Image.BICUBIC).save(output_dir / Path(path).name)
            scale = portrait_height / height
            scaled = {name: None if box is None else [box[0], box[1] * scale, box[2], box[3] * scale]
                      for name, box in boxes.items()}  # fmt: skip
            margin = (portrait_height - width) / 2  # rows the centre crop removes at the top and at the bottom
            for box in scaled.values():
                if box is not None:
                    details_total += 1
                    cut_details += box[1] < margin or box[3] > portrait_height - margin
            images.append(Path(path).name)
            details.append(scaled)
        record.update(images=images, details=details)
        lines.append(json.dumps(record))
    (output_dir / "catalog.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"detail_boxes": details_total, "detail_boxes_partly_cut_by_crop": cut_details}


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--seed", type=int, default=0)
    args = arguments.parse_args()
    size = QUICK if args.toy else DEFAULT
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        make_synthetic(scratch / "square", products=size.products, seed=args.seed, views=3,
                       image_size=size.image_size, hard=True, progress=False, **TESTBED)  # fmt: skip
        catalog_dir = scratch / "portrait"
        results["catalog"] = portrait_catalog(scratch / "square", catalog_dir)
        spec = f"jsonl:{catalog_dir / 'catalog.jsonl'}"
        # --toy: the demo's quick size from a small random CLIP (the shipped base is 64 px)
        base = prepare_base(scratch, catalog_dir, size, args.seed) if args.toy else str(PRETRAINED_BASE)
        for image_fit in ("crop", "pad"):
            start = time.perf_counter()
            settings = demo_training_arguments(
                base, catalog_dir, scratch / image_fit, size, args.seed, pretrained=not args.toy,
                train_data=f"{spec}:train", eval_data=None, image_fit=image_fit, **E2_OPTIONS,
            )  # fmt: skip
            train(settings)
            report = evaluate_model(scratch / image_fit / "model", catalog_dir)
            report["train_seconds"] = time.perf_counter() - start
            results[image_fit] = report
            print(image_fit, "SumR", round(report["full"]["sumr"], 2), flush=True)
    crop, pad = results["crop"], results["pad"]
    results["pad_minus_crop"] = {
        "sumr": pad["full"]["sumr"] - crop["full"]["sumr"],
        "tagging_region": {
            entity: pad["tagging"][entity]["region"] - crop["tagging"][entity]["region"] for entity in crop["tagging"]
        },  # fmt: skip
    }
    results["setting"] = (
        f"demo recipe from {'a small random' if args.toy else 'the shipped small pretrained'} CLIP, "
        f"{size.products} products x 3 views, images "
        f"{size.image_size} wide stretched to {PORTRAIT_ASPECT:.2f}x their height, seed {args.seed}"
    )
    write_result("framing", results, args.output)


# ---------------------------------------------------------------- its section of BENCHMARKS.md
def render(result: dict) -> list[str]:
    """Portrait photos with CLIP's centre crop vs letterboxed (`pad`): retrieval, tagging, selection."""
    entities = list(result["crop"]["tagging"])
    headers = ["framing", "SumR", "R@1 image->text", "R@1 text->image",
               *(f"{entity} tagging (region)" for entity in entities), "brand logo hit / chance"]  # fmt: skip
    rows = []
    for image_fit in ("crop", "pad"):
        report = result[image_fit]
        full = report["full"]
        logo = logo_summary(report.get("selection", {}))
        rows.append([image_fit, f"{full['sumr']:.1f}", f"{full['image_to_text']['R@1']:.1f}",
                     f"{full['text_to_image']['R@1']:.1f}",
                     *(f"{report['tagging'][entity]['region']:.1f}" for entity in entities), logo])  # fmt: skip
    catalog = result["catalog"]
    difference = result["pad_minus_crop"]
    return [
        *heading("Framing portrait photos: crop vs pad", result["setting"]),
        f"{catalog['detail_boxes_partly_cut_by_crop']} of the {catalog['detail_boxes']} detail boxes (logos, trims, "
        "...) reach into the rows the centre crop removes.",
        "",
        *table(headers, rows),
        "",
        f"pad minus crop: SumR {difference['sumr']:+.1f}; region tagging "
        + ", ".join(f"{entity} {value:+.1f}" for entity, value in difference["tagging_region"].items())
        + " points (one seed).",
        "",
    ]


def logo_summary(selection: dict) -> str:
    """The brand tokens' logo hit rate over chance in the last fusion block, when measured."""
    blocks = selection.get("entities", {}).get("brand", {}).get("blocks") or []
    if not blocks:
        return "n/a"
    last = blocks[-1]
    return f"{100 * last['hit']:.1f}% / {100 * last['chance']:.1f}%"


if __name__ == "__main__":
    main()
