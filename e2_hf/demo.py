"""The main job in one command: synthetic catalog -> tokenizer -> small CLIP -> E2 and CLIP-FT
trained on the same budget -> both evaluated -> report.

    e2-hf demo --output-dir demo [--quick] [--base NAME_OR_PATH]
"""

from __future__ import annotations

from pathlib import Path

import torch

from .modeling.processing_e2clip import clip_image_processor


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
