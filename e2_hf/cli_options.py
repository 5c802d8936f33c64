"""Command-line options shared by the commands that read catalogs (train, evaluate, tag, index),
and the one way they tell the user about their data."""

from __future__ import annotations

import argparse
import sys

from .choices import DTYPE_NAMES


def print_notice(message: str | None) -> None:
    """A line for the user on stderr (stdout carries the results); nothing for `None`."""
    if message:
        print(message, file=sys.stderr)


def add_tag_separator_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tag-separator", dest="tag_separators", action="append", metavar="ENTITY=CHARACTERS",
        help="read ENTITY as a multi-value tag, split at any of CHARACTERS (\\n is a newline), e.g. 'season=|' or "
        "'composition=|\\n'; repeat for each such entity",
    )  # fmt: skip


def add_catalog_reading_arguments(parser: argparse.ArgumentParser) -> None:
    """`--keep-html` and `--tag-separator`, read into `args.keep_html` and `args.tag_separators`."""
    parser.add_argument("--keep-html", action="store_true",
                        help="leave HTML in descriptions and tags (default: reduced to text)")  # fmt: skip
    add_tag_separator_argument(parser)


DTYPE_HELP = (
    "the model's dtype; bfloat16 and float16 change some of the chosen patches against float32 (and with "
    "them some regional embeddings): how many is measured in BENCHMARKS.md, section 7"
)


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help=DTYPE_HELP)
