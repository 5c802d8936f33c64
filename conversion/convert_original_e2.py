"""Convert a checkpoint of the E2 authors' code into a Hub-ready E2CLIPModel folder.

    python -m conversion.convert_original_e2 --checkpoint best.pth --output-dir e2-converted
    e2-hf convert-original --checkpoint best.pth --output-dir e2-converted --tokenizer openai/clip-vit-base-patch32

The reference saves `{"state_dict": ...}` (`best.pth`) or adds optimizer, scheduler, epoch and an
`argparse.Namespace` (`ckpt.pth.tar`); keys may carry DataParallel's `module.` prefix. Keys are
OpenAI CLIP's plus E2's additions (spec, section 5). Every key is mapped through an explicit
table; an unexpected or missing key is an error, except the reference's documented unused tensors.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from e2_hf.modeling import E2CLIPConfig, E2CLIPModel, clip_image_processor

from .cli import add_convert_original_arguments
from .common import command_main, load_weights_only, processor_with_tokenizer
from .openai_layout import convert_clip_key, infer_clip_sizes, strip_prefixes

# Tensors the reference creates but never uses in its forward pass.
UNUSED_KEYS = ("visual.proj", "visual.proj_cls_mid", "visual.ln_selection.weight", "visual.ln_selection.bias")
# Entity order of the reference code, by number of entities (2 selection tokens each).
REFERENCE_ENTITIES = {
    4: ("subcategory", "brand", "description", "season"),
    5: ("subcategory", "brand", "description", "season", "composition"),
}
# The reference runs its fusion blocks after the 8th and the 11th of 12 layers.
REFERENCE_FUSION_LAYERS = (7, 10)
REFERENCE_VISION_LAYERS = 12
FUSION_SUFFIXES = ("", "2", "3", "4", "5", "6", "7", "8")  # proj_q, proj_q2, ... per fusion block

SELECTION_TOKEN_KEY = re.compile(r"^visual\.token_(\d+)_embedding$")
ENTITY_NORM_KEY = re.compile(r"^visual\.ln_s(\d+)\.(weight|bias)$")
ENTITY_PROJECTION_KEY = re.compile(r"^visual\.proj_s(\d+)$")


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a reference checkpoint safely (`weights_only=True`; only `argparse.Namespace` is allowed
    besides tensors) and returns its model state dict without wrapper prefixes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    checkpoint = load_weights_only(path, allowed=[argparse.Namespace])  # the reference stores its args
    if not isinstance(checkpoint, dict) or not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or {{'state_dict': ...}}).")
    return strip_prefixes(checkpoint)


def infer_config(
    state_dict: dict[str, torch.Tensor],
    entities: list[str] | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    fusion_layers: list[int] | None = None,
) -> E2CLIPConfig:
    """An E2CLIPConfig matching the checkpoint's shapes. Heads default to OpenAI's `width // 64`."""
    sizes = infer_clip_sizes(state_dict, projection_key="text_projection")
    num_tokens = sum(1 for key in state_dict if SELECTION_TOKEN_KEY.match(key))
    num_entities = sum(1 for key in state_dict if ENTITY_PROJECTION_KEY.match(key))
    num_fusion = sum(1 for suffix in FUSION_SUFFIXES if f"visual.proj_q{suffix}" in state_dict)
    if num_tokens == 0 or num_entities == 0 or num_tokens % num_entities:
        raise ValueError(
            f"not an E2 checkpoint: {num_tokens} selection tokens (visual.token_*_embedding) for "
            f"{num_entities} entity projections (visual.proj_s*)."
        )
    if entities is None:
        if num_entities not in REFERENCE_ENTITIES:
            raise ValueError(f"the checkpoint has {num_entities} entities; name them with --entities a,b,c.")
        entities = list(REFERENCE_ENTITIES[num_entities])
    if len(entities) != num_entities:
        raise ValueError(f"--entities names {len(entities)} entities but the checkpoint has {num_entities}.")
    if fusion_layers is None:
        if sizes.vision_layers != REFERENCE_VISION_LAYERS or num_fusion != len(REFERENCE_FUSION_LAYERS):
            raise ValueError(
                f"the checkpoint has {sizes.vision_layers} vision layers and {num_fusion} fusion blocks; "
                "give their positions with --fusion-layers i,j."
            )
        fusion_layers = list(REFERENCE_FUSION_LAYERS)
    if len(fusion_layers) != num_fusion:
        raise ValueError(
            f"--fusion-layers names {len(fusion_layers)} layers but the checkpoint has {num_fusion} fusion blocks."
        )
    return E2CLIPConfig(
        text_config={
            "vocab_size": sizes.vocab_size,
            "hidden_size": sizes.text_width,
            "intermediate_size": sizes.text_intermediate,
            "num_hidden_layers": sizes.text_layers,
            "num_attention_heads": text_heads or max(sizes.text_width // 64, 1),
            "max_position_embeddings": sizes.context_length,
            "projection_dim": sizes.projection_dim,
            # The reference pads with 0 and ends every text with the highest id.
            "pad_token_id": 0,
            "bos_token_id": sizes.vocab_size - 2,
            "eos_token_id": sizes.vocab_size - 1,
        },
        vision_config={
            "hidden_size": sizes.vision_width,
            "intermediate_size": sizes.vision_intermediate,
            "num_hidden_layers": sizes.vision_layers,
            "num_attention_heads": vision_heads or max(sizes.vision_width // 64, 1),
            "image_size": sizes.image_size,
            "patch_size": sizes.patch_size,
            "projection_dim": sizes.projection_dim,
        },
        projection_dim=sizes.projection_dim,
        entities=entities,
        tokens_per_entity=num_tokens // num_entities,
        fusion_layers=fusion_layers,
    )


def convert_e2_key(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """One E2 addition -> its E2CLIPModel tensor(s); `None` if the key is not an E2 addition.

    Selection tokens are handled by `stack_selection_tokens` (they become one tensor).
    """
    if key == "visual.proj_cls":
        return {"visual_projection.weight": tensor.t().contiguous()}
    for block, suffix in enumerate(FUSION_SUFFIXES):
        for name in ("q", "k", "v"):
            if key == f"visual.proj_{name}{suffix}":
                return {f"vision_model.fusion_blocks.{block}.{name}_proj.weight": tensor.t().contiguous()}
    if match := ENTITY_NORM_KEY.match(key):
        entity, kind = int(match.group(1)) - 1, match.group(2)
        return {f"region_head.layer_norms.{entity}.{kind}": tensor}
    if match := ENTITY_PROJECTION_KEY.match(key):
        return {f"region_head.projections.{int(match.group(1)) - 1}.weight": tensor.t().contiguous()}
    return None


def stack_selection_tokens(state_dict: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference prepends `token_1..token_T` one after another, so sequence position 0 holds
    `token_T` and position T-1 holds `token_1`: `[num_tokens, width]` in sequence order."""
    numbers = sorted(int(match.group(1)) for key in state_dict if (match := SELECTION_TOKEN_KEY.match(key)))
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"selection tokens must be numbered 1..T, got {numbers}.")
    return torch.stack([state_dict[f"visual.token_{number}_embedding"] for number in reversed(numbers)])


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The whole mapping; raises on any key that is neither mapped nor documented as unused."""
    converted: dict[str, torch.Tensor] = {"vision_model.selection_tokens": stack_selection_tokens(state_dict)}
    unknown = []
    for key, tensor in state_dict.items():
        if key in UNUSED_KEYS or SELECTION_TOKEN_KEY.match(key):
            continue
        mapped = convert_e2_key(key, tensor) or convert_clip_key(key, tensor)
        if mapped is None:
            unknown.append(key)
            continue
        converted.update(mapped)
    if unknown:
        raise ValueError(f"unexpected keys in the checkpoint (not in the conversion table): {sorted(unknown)}")
    return converted


def load_into_model(config: E2CLIPConfig, converted: dict[str, torch.Tensor]) -> E2CLIPModel:
    """Builds the model and loads every tensor; missing keys, extra keys and shape mismatches fail."""
    model = E2CLIPModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(converted[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(converted))
        if converted[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}, shapes {mismatched}")
    model.load_state_dict(converted, strict=True)
    return model.eval()


def convert_original_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path | None = None,
    entities: list[str] | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    fusion_layers: list[int] | None = None,
    tokenizer: str | None = None,
) -> E2CLIPModel:
    """Converts, checks and (with `output_dir`) saves a Hub-ready folder: `model.safetensors`,
    config, code files and, when `tokenizer` is given, the processor."""
    state_dict = load_original_checkpoint(checkpoint)
    config = infer_config(state_dict, entities, vision_heads, text_heads, fusion_layers)
    model = load_into_model(config, convert_state_dict(state_dict))
    _check_forward(model)
    if output_dir is not None:
        model.save_pretrained(output_dir, safe_serialization=True)
        if tokenizer is not None:
            processor_with_tokenizer(tokenizer, config).save_pretrained(output_dir)
        else:  # the image preprocessing is known from the sizes; the tokenizer is not
            clip_image_processor(config.vision_config.image_size).save_pretrained(output_dir)
    return model


@torch.no_grad()
def _check_forward(model: E2CLIPModel) -> None:
    """A forward pass on random inputs must give finite embeddings of the right shapes."""
    config = model.config
    size = config.vision_config.image_size
    pixel_values = torch.randn(2, config.vision_config.num_channels, size, size)
    input_ids = torch.randint(1, config.text_config.vocab_size - 2, (2, 5))
    input_ids[:, -1] = config.text_config.eos_token_id
    outputs = model(input_ids=input_ids, pixel_values=pixel_values)
    for name in ("text_embeds", "image_embeds", "region_embeds"):
        if not torch.isfinite(outputs[name]).all():
            raise ValueError(f"the converted model gives non-finite {name}.")


def run(args: argparse.Namespace) -> None:
    model = convert_original_checkpoint(
        args.checkpoint,
        args.output_dir,
        entities=args.entities,
        vision_heads=args.vision_heads,
        text_heads=args.text_heads,
        fusion_layers=args.fusion_layers,
        tokenizer=args.tokenizer,
    )
    print(f"converted {args.checkpoint} -> {args.output_dir} (entities: {', '.join(model.config.entities)})")
    if args.tokenizer is None:
        print("no --tokenizer given: the folder holds the image processor but no tokenizer.")


def main(argv: list[str] | None = None) -> None:
    command_main(add_convert_original_arguments, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
