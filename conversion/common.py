"""Pieces shared by the converters: argument parsers and the processor of a converted model."""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from e2_hf.modeling import E2CLIPConfig, E2CLIPProcessor, clip_image_processor


def processor_with_tokenizer(tokenizer_name: str, config: E2CLIPConfig) -> E2CLIPProcessor:
    """CLIP's image preprocessing at the model's image size plus the named tokenizer, whose
    vocabulary must match the model's."""
    from transformers import CLIPTokenizerFast

    tokenizer = CLIPTokenizerFast.from_pretrained(tokenizer_name)
    vocab_size = config.text_config.vocab_size
    if len(tokenizer) != vocab_size:
        raise ValueError(f"tokenizer {tokenizer_name} has {len(tokenizer)} tokens, the model {vocab_size}.")
    return E2CLIPProcessor(
        clip_image_processor(config.vision_config.image_size),
        tokenizer,
        entities=config.entities,
        max_length=config.text_config.max_position_embeddings,
    )


def load_weights_only(path: str | Path, allowed: Sequence[type] = ()) -> Any:
    """`torch.load(weights_only=True)` (plus the `allowed` classes); any other pickled object is
    refused with a clear error, and a `{"state_dict": ...}` wrapper is unwrapped."""
    from .torchscript_weights import is_torchscript_archive

    if is_torchscript_archive(Path(path)):
        raise ValueError(
            f"{path} is a TorchScript archive, not a checkpoint saved with torch.save; it is not loaded "
            "(loading one runs its code). Convert OpenAI-layout CLIP archives with `e2-hf init-from-clip`."
        )
    try:
        with torch.serialization.safe_globals(list(allowed)):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        kinds = ", ".join(["tensors", *(kind.__name__ for kind in allowed)])
        raise ValueError(
            f"{path}: refusing to load; it holds pickled objects beyond {kinds}, so it cannot be read with "
            f"torch.load(weights_only=True). Details: {error}"
        ) from None
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    return loaded


def command_main(
    add_arguments: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], None],
    description: str,
    argv: list[str] | None = None,
) -> None:
    """`python -m ...` entry of a converter: parse, run, and turn expected errors into a message."""
    parser = add_arguments(argparse.ArgumentParser(description=description))
    try:
        run(parser.parse_args(argv))
    except (ValueError, FileNotFoundError, OSError) as error:
        sys.exit(f"error: {error}")
