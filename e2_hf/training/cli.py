"""`e2-hf train` flags, one per `TrainingArguments` field, plus `--config FILE`."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from ..cli_options import add_tag_separator_argument
from .arguments import TrainingArguments

HELP = {
    "model": "E2 checkpoint, or a CLIP checkpoint turned into E2 (Hub id or local folder)",
    "train_data": "data spec: fashiongen:FILE.h5, amazon:ROOT[:split], jsonl:FILE[:split], csv:FILE[:split], "
    "hf:PATH[:split]",
    "output_dir": "checkpoints/, best-model/ and model/ are written here",
    "eval_data": "data spec evaluated (full-candidate retrieval) after every epoch; best SumR kept",
    "baseline": "e2, or clip-ft: plain CLIP fine-tuning on the same data and budget",
    "entities": "entities when starting from CLIP (default brand,season,subcategory,composition); leave one "
    "out to ablate its token group",
    "tokens_per_entity": "selection tokens per entity when starting from CLIP",
    "fusion_layers": "0-based fusion layers when starting from CLIP (default 7,10); 'none': selection tokens "
    "without fusion blocks (ablation)",
    "region_loss": "clip or multi_positive, when starting from CLIP",
    "region_loss_weight": "weight of the region loss when starting from CLIP (default 0.5); 0 turns it off (ablation)",
    "selection_attention": "full (the paper) or isolated (selection tokens see patches only through their "
    "choice), when starting from CLIP",
    "gumbel_tau": "temperature of the straight-through Gumbel-softmax selection, when starting from CLIP",
    "warmup_epochs": "stage 1: epochs training only E2's new parameters",
    "epochs": "stage 2: epochs training everything",
    "warmup_lr": "peak learning rate of stage 1",
    "lr": "peak learning rate of stage 2",
    "weight_decay": "AdamW weight decay (not on norms, biases, selection tokens, logit scale)",
    "warmup_steps": "linear warm-up steps of each stage's cosine schedule (at most a fifth of the stage)",
    "batch_size": "products per batch per process",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "gradient_checkpointing": "recompute activations in the backward pass to save memory",
    "mixed_precision": "no, fp16 or bf16",
    "save_steps": "save_state every N optimizer steps (and at the end)",
    "save_total_limit": "keep the newest N checkpoints (at least 2: the newest is proven good by the step after it)",
    "resume_from_checkpoint": "latest (the newest complete one), or a checkpoint folder, to continue a run exactly",
    "report_to": "none, tensorboard, wandb, ... (Accelerate trackers)",
    "strict": "stop at the first unreadable image instead of skipping it",
    "keep_html": "leave HTML in descriptions and tags (default: reduced to text)",
    "max_skipped_share": "stop when more than this share of the images read so far were unreadable",
    "text_fields": "order of the product text: tag names and description",
    "image_fit": "crop (CLIP's centre crop) or pad (letterbox: the whole photo); saved with the model's processor "
    "(default: the starting model's setting)",
}


def _list_of(kind):
    def parse(text: str):
        if text.strip().lower() == "none":  # an explicitly empty list, e.g. --fusion-layers none
            return []
        return [kind(part.strip()) for part in text.split(",") if part.strip()]

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", help="JSON or YAML file of settings; flags given here override it")
    for item in fields(TrainingArguments):
        flag = "--" + item.name.replace("_", "-")
        default = None if item.default is MISSING and item.default_factory is MISSING else item.default
        help_text = HELP.get(item.name, "")
        if item.name == "tag_separators":  # repeated, one entity each, as the other commands take it
            add_tag_separator_argument(parser)
        elif isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif "list[int]" in str(item.type):
            parser.add_argument(flag, type=_list_of(int), help=help_text)
        elif "list[str]" in str(item.type):
            parser.add_argument(flag, type=_list_of(str), help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(item.type).split(" ")[0], str)
            parser.add_argument(flag, type=kind, help=f"{help_text} (default {default})" if help_text else None)
    return parser


def arguments_from(namespace: argparse.Namespace) -> TrainingArguments:
    given = {item.name: getattr(namespace, item.name) for item in fields(TrainingArguments)}
    given = {name: value for name, value in given.items() if value is not None}
    if namespace.config:
        return TrainingArguments.from_file(namespace.config, **given)
    missing = [f"--{name.replace('_', '-')}" for name in ("model", "train_data", "output_dir") if name not in given]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (or give them in --config)")
    return TrainingArguments(**given)


def run(namespace: argparse.Namespace) -> None:
    import json

    from .trainer import train

    summary = train(arguments_from(namespace))
    print(json.dumps({key: value for key, value in summary.items() if key != "history"}, indent=2))
