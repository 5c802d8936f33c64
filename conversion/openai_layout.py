"""OpenAI CLIP's state-dict layout -> transformers CLIP names (E2 keeps those names).

OpenAI's CLIP (and open_clip checkpoints of OpenAI-style ViTs, and the E2 authors' code) store
`visual.*` for the image tower and bare names for the text tower. The rename table below is the
whole mapping; three kinds of tensors change form on the way:

- `attn.in_proj_weight` / `attn.in_proj_bias` hold q, k and v stacked: split in thirds.
- `visual.proj` and `text_projection` are used as `x @ W`: transposed into Linear weights.
- nothing else changes shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# OpenAI name -> transformers name, for keys outside the residual blocks.
TEXT_RENAMES = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
VISION_RENAMES = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
# Used as `x @ W`: stored transposed relative to an nn.Linear weight.
TRANSPOSED_RENAMES = {
    "text_projection": "text_projection.weight",
    "visual.proj": "visual_projection.weight",
}
# Inside `...resblocks.{i}.`: OpenAI suffix -> transformers suffix inside `...layers.{i}.`.
BLOCK_RENAMES = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
STACKED_QKV = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}
TOWER_PREFIXES = {
    "visual.transformer.resblocks.": "vision_model.encoder.layers.",
    "transformer.resblocks.": "text_model.encoder.layers.",
}
BLOCK_KEY = re.compile(r"^(visual\.transformer\.resblocks\.|transformer\.resblocks\.)(\d+)\.(.+)$")


@dataclass
class ClipSizes:
    """Sizes of an OpenAI-layout CLIP, read from tensor shapes."""

    vision_width: int
    vision_layers: int
    vision_intermediate: int
    patch_size: int
    image_size: int
    text_width: int
    text_layers: int
    text_intermediate: int
    vocab_size: int
    context_length: int
    projection_dim: int


def count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    indices = {
        int(match.group(2)) for key in state_dict if (match := BLOCK_KEY.match(key)) and match.group(1) == prefix
    }
    if indices != set(range(len(indices))):
        raise ValueError(f"{prefix}* blocks are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def infer_clip_sizes(state_dict: dict[str, torch.Tensor], projection_key: str = "text_projection") -> ClipSizes:
    """Reads every size of the two towers from the tensors' shapes."""
    required = (
        "visual.conv1.weight",
        "visual.positional_embedding",
        "token_embedding.weight",
        "positional_embedding",
        projection_key,
    )
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ValueError(f"not an OpenAI-layout CLIP state dict: missing {missing}")
    conv = state_dict["visual.conv1.weight"]  # [width, 3, patch, patch]
    num_positions = state_dict["visual.positional_embedding"].shape[0]
    grid = round((num_positions - 1) ** 0.5)
    if grid * grid != num_positions - 1:
        raise ValueError(f"visual.positional_embedding has {num_positions} rows, not 1 + a square number of patches.")
    return ClipSizes(
        vision_width=conv.shape[0],
        vision_layers=count_blocks(state_dict, "visual.transformer.resblocks."),
        vision_intermediate=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        patch_size=conv.shape[-1],
        image_size=grid * conv.shape[-1],
        text_width=state_dict["token_embedding.weight"].shape[1],
        text_layers=count_blocks(state_dict, "transformer.resblocks."),
        text_intermediate=state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        context_length=state_dict["positional_embedding"].shape[0],
        projection_dim=state_dict[projection_key].shape[1],
    )


def convert_clip_key(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """One OpenAI-layout CLIP tensor -> its transformers tensors; `None` if the key is not CLIP's."""
    if key in TEXT_RENAMES:
        return {TEXT_RENAMES[key]: tensor}
    if key in VISION_RENAMES:
        return {VISION_RENAMES[key]: tensor}
    if key in TRANSPOSED_RENAMES:
        return {TRANSPOSED_RENAMES[key]: tensor.t().contiguous()}
    match = BLOCK_KEY.match(key)
    if match is None:
        return None
    prefix, index, suffix = match.groups()
    layer = f"{TOWER_PREFIXES[prefix]}{index}."
    if suffix in BLOCK_RENAMES:
        return {layer + BLOCK_RENAMES[suffix]: tensor}
    if suffix in STACKED_QKV:
        kind = STACKED_QKV[suffix]
        query, key_, value = tensor.chunk(3, dim=0)
        return {
            f"{layer}self_attn.q_proj.{kind}": query.contiguous(),
            f"{layer}self_attn.k_proj.{kind}": key_.contiguous(),
            f"{layer}self_attn.v_proj.{kind}": value.contiguous(),
        }
    return None


def strip_prefixes(
    state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.",)
) -> dict[str, torch.Tensor]:
    """Removes wrapper prefixes (DataParallel's `module.`) from every key."""
    stripped = {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        stripped[key] = value
    return stripped
