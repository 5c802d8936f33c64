"""Pieces shared by the converters: argument parsers and the processor of a converted model."""

from __future__ import annotations

from e2_hf.modeling import E2CLIPConfig, E2CLIPProcessor, clip_image_processor


def int_list(text: str) -> list[int]:
    """`"7,10"` -> `[7, 10]`."""
    return [int(part) for part in text.split(",") if part.strip()]


def name_list(text: str) -> list[str]:
    """`"brand, season"` -> `["brand", "season"]`."""
    return [part.strip() for part in text.split(",") if part.strip()]


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
