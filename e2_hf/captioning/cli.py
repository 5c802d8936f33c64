"""`e2-hf train-captioner` and `e2-hf caption`."""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields
from pathlib import Path

from ..cli_options import add_catalog_reading_arguments
from .arguments import RECIPES, CaptionerTrainingArguments

TRAIN_HELP = {
    "model": "the frozen backbone: an E2 or CLIP-FT folder or Hub id",
    "train_data": "data spec of the texts to learn from (only texts are read), e.g. jsonl:catalog.jsonl:train",
    "output_dir": "the captioner folder to write",
    "recipe": f"{' or '.join(RECIPES)}: noise on the text embeddings in training (CapDec), or image embeddings "
    "projected onto a memory of text embeddings at inference (DeCap)",
    "decoder": "a causal LM (Hub id or folder, e.g. gpt2) to start from, with its tokenizer; default: a small "
    "GPT-2 from scratch (--decoder-layers, --decoder-width, --decoder-heads) with a byte-level BPE of "
    "--decoder-vocab-size tokens learnt from the training texts",
    "decoder_layers": "from-scratch decoder: transformer layers",
    "decoder_width": "from-scratch decoder: hidden size",
    "decoder_heads": "from-scratch decoder: attention heads",
    "decoder_vocab_size": "from-scratch decoder: tokens of the byte-level BPE learnt from the texts",
    "prefix_length": "prefix tokens the mapping network gives the decoder",
    "epochs": "passes over the texts",
    "lr": "peak AdamW learning rate (linear warm-up, cosine decay)",
    "noise_variance": "capdec: variance of the Gaussian noise on the text embeddings (CapDec's default)",
    "memory_temperature": "decap: softmax temperature of the memory weights",
    "max_caption_tokens": "longest caption in tokens (training texts are cut there)",
    "device": "cuda, cpu, ... (default: cuda when available)",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for item in fields(CaptionerTrainingArguments):
        if item.name in ("keep_html", "tag_separators"):
            continue
        flag = "--" + item.name.replace("_", "-")
        required = item.default is MISSING and item.default_factory is MISSING
        kind = {"int": int, "float": float}.get(str(item.type).split(" ")[0], str)
        default_text = "" if required or item.default is None else f" (default {item.default})"
        parser.add_argument(flag, type=kind, required=required, default=None if required else item.default,
                            choices=RECIPES if item.name == "recipe" else None,
                            help=TRAIN_HELP.get(item.name, "") + default_text)  # fmt: skip
    add_catalog_reading_arguments(parser)
    return parser


def run_train(args: argparse.Namespace) -> None:
    from .training import train_captioner

    values = {item.name: getattr(args, item.name) for item in fields(CaptionerTrainingArguments)}
    values["tag_separators"] = values["tag_separators"] or []
    summary = train_captioner(CaptionerTrainingArguments(**values))
    print(json.dumps(summary, indent=2))


def add_caption_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="the backbone the captioner was trained on")
    parser.add_argument("--captioner", required=True, help="a folder written by e2-hf train-captioner")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", nargs="+", help="image files to caption")
    source.add_argument("--data", help="data spec: caption each product's first view and score the captions "
                        "against the product texts (BLEU@4, METEOR, ROUGE-L, CIDEr, attribute accuracy)")  # fmt: skip
    parser.add_argument("--limit", type=int, help="with --data: only the first N products")
    parser.add_argument("--num-beams", type=int, default=1, help="1: greedy decoding; more: beam search")
    parser.add_argument("--max-new-tokens", type=int, help="default: the captioner's max_caption_tokens")
    parser.add_argument("--output", help="write the captions as JSON lines here")
    parser.add_argument("--metrics", help="with --data: write the scores as JSON here")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    add_catalog_reading_arguments(parser)
    return parser


def run_caption(args: argparse.Namespace) -> None:
    from ..evaluation.embedding import load_for_inference
    from .inference import caption_catalog, caption_images, load_captioner, score_captions
    from .metrics import check_metrics_available

    if args.num_beams < 1:
        raise ValueError(f"--num-beams must be at least 1, got {args.num_beams}")
    if args.metrics and not args.data:
        raise ValueError("--metrics scores captions against product texts: it needs --data")
    if args.data:
        check_metrics_available()  # before any captioning: pycocoevalcap and java
    model, processor, _, _ = load_for_inference(args.model, args.device)
    captioner = load_captioner(args.captioner, model)
    if args.image:
        captions = caption_images(captioner, model, processor, args.image, args.num_beams, args.max_new_tokens)
        records = [{"image": image, "caption": caption} for image, caption in zip(args.image, captions)]
        for record in records:
            print(f"{record['image']}: {record['caption']}")
    else:
        captioned = caption_catalog(captioner, model, processor, args.data, args.num_beams, args.max_new_tokens,
                                    limit=args.limit, keep_html=args.keep_html,
                                    tag_separators=args.tag_separators)  # fmt: skip
        records = [item.to_json() for item in captioned]
        scores = score_captions(captioned, list(captioned[0].values) if captioned else [])
        print(json.dumps(scores, indent=2))
        if args.metrics:
            Path(args.metrics).write_text(json.dumps(scores, indent=2) + "\n")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        print(f"wrote {args.output}")
