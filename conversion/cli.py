"""The converters' command-line flags (`e2-hf convert-original`, `init-from-clip`, `push`): light to
import, so that each command's `--help` needs no torch; each converter's module runs the command."""

from __future__ import annotations

import argparse


def int_list(text: str) -> list[int]:
    """`"7,10"` -> `[7, 10]`."""
    return [int(part) for part in text.split(",") if part.strip()]


def name_list(text: str) -> list[str]:
    """`"brand, season"` -> `["brand", "season"]`."""
    return [part.strip() for part in text.split(",") if part.strip()]


def add_convert_original_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--checkpoint", required=True, help="the authors' .pth / .pth.tar / .pt file")
    parser.add_argument("--output-dir", required=True, help="folder to write the Hub-ready model to")
    parser.add_argument(
        "--entities", type=name_list, help="entity names in checkpoint order (default: the reference's)"
    )
    parser.add_argument("--vision-heads", type=int, help="vision attention heads (default: width // 64)")
    parser.add_argument("--text-heads", type=int, help="text attention heads (default: width // 64)")
    parser.add_argument("--fusion-layers", type=int_list, help="0-based layers followed by fusion (default: 7,10)")
    parser.add_argument(
        "--tokenizer", help="tokenizer (Hub id or folder) to save with the model, e.g. openai/clip-vit-base-patch32"
    )
    return parser


def add_init_from_clip_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--clip", required=True, help="transformers CLIP (Hub id or folder) or an OpenAI-layout file")
    parser.add_argument("--output-dir", required=True, help="folder to write the Hub-ready E2 model to")
    parser.add_argument("--tokenizer", help="tokenizer (Hub id or folder); required for OpenAI-layout files")
    parser.add_argument(
        "--projection-init",
        choices=("clip", "random"),
        default="clip",
        help="entity and global projections start from CLIP's visual projection, or random",
    )
    parser.add_argument("--vision-heads", type=int, help="OpenAI-layout files: vision heads (default width // 64)")
    parser.add_argument("--text-heads", type=int, help="OpenAI-layout files: text heads (default width // 64)")
    parser.add_argument(
        "--image-fit", default="crop",  # checked where the processor is made: its IMAGE_FITS need transformers
        help="how non-square photos become the square input: crop (CLIP's centre crop) or pad (letterbox, whole photo)",
    )  # fmt: skip
    overrides = parser.add_argument_group("E2 config overrides (default: E2CLIPConfig's)")
    overrides.add_argument("--entities", type=name_list, help="entity names, e.g. brand,season,subcategory,composition")
    overrides.add_argument("--tokens-per-entity", type=int_list, help="one count for all, or one per entity")
    overrides.add_argument("--fusion-layers", type=int_list, help="0-based vision layers followed by a fusion block")
    overrides.add_argument("--region-loss", choices=("clip", "multi_positive"))
    overrides.add_argument("--gumbel-tau", type=float)
    overrides.add_argument("--selection-attention", choices=("full", "isolated"),
                           help="isolated: selection tokens see patches only through their choice")  # fmt: skip
    overrides.add_argument("--keep-patches", action="store_true", help="do not drop patches after the last fusion")
    return parser


def add_push_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="a folder written by save_pretrained (model + processor)")
    parser.add_argument("--repo-id", required=True, help="namespace/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="branch to push to (created from main if missing; default main)")
    parser.add_argument("--commit-message", default="Upload E2 model")
    parser.add_argument("--metrics", help="metrics JSON from `e2-hf evaluate` or the demo's report.json")
    parser.add_argument("--dataset-name", default="evaluation set", help="name of the evaluation data in the card")
    parser.add_argument("--base-model", help="Hub id of the model this one was trained from")
    parser.add_argument("--license", help="license id for the card, e.g. mit or apache-2.0")
    parser.add_argument("--dataset", action="append", dest="datasets", help="training dataset id (repeatable)")
    parser.add_argument("--with-onnx", action="store_true", help="also upload onnx/ (written by e2-hf export-onnx)")
    return parser
