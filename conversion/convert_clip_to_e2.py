"""Turn a CLIP checkpoint into a Hub-ready E2 folder (model, tokenizer, image processor).

    e2-hf init-from-clip --clip openai/clip-vit-base-patch32 --output-dir e2-base
    e2-hf init-from-clip --clip ViT-B-32.pt --tokenizer openai/clip-vit-base-patch32 --output-dir e2-base

Sources:
- a transformers CLIP checkpoint: a Hub id (`openai/clip-vit-base-patch32`,
  `patrickjohncyh/fashion-clip`) or a local folder; its tokenizer and image processor come along;
- an OpenAI-layout state dict: OpenAI's own TorchScript `.pt` archives, open_clip `.bin` /
  `.pt` / `.safetensors` files of OpenAI-style ViTs; `--tokenizer` names the tokenizer.

Before saving, the converted model's text embeddings are compared with the source CLIP's on
sample inputs (transformers' `CLIPModel` with the source weights), and the new parameters are
listed. No file is ever executed: TorchScript archives are read as data (their tensors only, never
`torch.jit.load`), other files with safetensors or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from e2_hf.compat import projected_features
from e2_hf.modeling import E2CLIPConfig, E2CLIPModel, E2CLIPProcessor
from e2_hf.modeling.image_processing_e2clip import checked_image_fit
from e2_hf.parameters import count_new_parameters

from .cli import add_init_from_clip_arguments
from .common import command_main, load_weights_only, processor_with_tokenizer
from .openai_layout import convert_clip_key, infer_clip_sizes, strip_prefixes
from .torchscript_weights import is_torchscript_archive, read_torchscript_tensors

# Non-weight entries of OpenAI's archives (sizes stored as tensors) and open_clip buffers.
OPENAI_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
TEXT_CHECK_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# E2 from a CLIP's weights (the new parameters initialised)
# ---------------------------------------------------------------------------------------------
PROJECTION_INITS = ("clip", "random")


def _check_projection_init(projection_init: str) -> None:
    if projection_init not in PROJECTION_INITS:
        raise ValueError(f"projection_init must be one of {PROJECTION_INITS}, got {projection_init!r}.")


def from_clip(name_or_path: str, projection_init: str = "clip", **config_overrides: Any) -> E2CLIPModel:
    """E2 built from a transformers CLIP checkpoint (Hub id or local folder); nothing is saved
    (`init_from_clip` also checks, saves and accepts OpenAI-layout files).

    Every CLIP weight is copied; E2's additions start as follows. Selection tokens and fusion
    projections: normal with std `width**-0.5` (the reference). With `projection_init="clip"`
    (default) the entity projections start as copies of CLIP's visual projection and the entity
    norms as copies of `post_layernorm`, so every regional embedding starts in CLIP's joint
    space; the global projection is CLIP's `visual_projection`. With `"random"`, the global and
    entity projections are drawn anew (std `width**-0.5`), as the reference does.

    Args:
        name_or_path: anything `transformers.CLIPModel.from_pretrained` accepts.
        projection_init: `"clip"` or `"random"`.
        config_overrides: `E2CLIPConfig` fields (entities, tokens_per_entity, fusion_layers, ...).
    """
    from transformers import CLIPModel

    _check_projection_init(projection_init)
    clip = CLIPModel.from_pretrained(name_or_path)
    config = E2CLIPConfig.from_clip_config(clip.config, **config_overrides)
    return from_clip_state_dict(config, clip.state_dict(), projection_init, source=str(name_or_path))


def from_clip_state_dict(
    config: E2CLIPConfig,
    clip_state_dict: dict[str, torch.Tensor],
    projection_init: str = "clip",
    source: str = "the CLIP state dict",
) -> E2CLIPModel:
    """E2 built from CLIP weights with transformers CLIP's names (see `from_clip`).

    Raises a `ValueError` unless the keys missing from `clip_state_dict` are exactly E2's
    additions and no key is left over.
    """
    _check_projection_init(projection_init)
    model = E2CLIPModel(config)
    clip_state = {key: value for key, value in clip_state_dict.items() if not key.endswith("position_ids")}
    incompatible = model.load_state_dict(clip_state, strict=False)
    new_names = set(model.e2_parameter_names())
    if set(incompatible.missing_keys) != new_names or incompatible.unexpected_keys:
        raise ValueError(
            f"{source} does not match E2's CLIP backbone: missing "
            f"{sorted(set(incompatible.missing_keys) - new_names)}, unexpected {incompatible.unexpected_keys}."
        )
    init_new_parameters(model, projection_init)
    return model


@torch.no_grad()
def init_new_parameters(model: E2CLIPModel, projection_init: str) -> None:
    """(Re)initialises E2's additions after CLIP's weights were loaded into `model`."""
    vision = model.vision_model
    model._init_weights(vision)  # the selection tokens
    for fusion_block in vision.fusion_blocks:
        model._init_weights(fusion_block)
    if projection_init == "random":
        nn.init.normal_(model.visual_projection.weight, std=model.visual_projection.in_features**-0.5)
    if model.region_head is None:
        return
    model._init_weights(model.region_head)
    for layer_norm, projection in zip(model.region_head.layer_norms, model.region_head.projections):
        if projection_init == "clip":
            projection.weight.copy_(model.visual_projection.weight)
            layer_norm.load_state_dict(vision.post_layernorm.state_dict())
        else:
            nn.init.ones_(layer_norm.weight)
            nn.init.zeros_(layer_norm.bias)


# ------------------------------------------------------------------------------------ reading
def load_openai_layout(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads an OpenAI-layout CLIP file's weights without running anything it contains.

    TorchScript archives (OpenAI's `.pt`) are read as data; everything else with safetensors or
    `torch.load(weights_only=True)`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(path)
    elif is_torchscript_archive(path):
        state_dict = read_torchscript_tensors(path)
    else:
        state_dict = load_weights_only(path)
    state_dict = strip_prefixes(state_dict, ("module.",))
    # OpenAI's archives keep sizes and the causal mask as tensor attributes, also inside blocks
    return {key: value for key, value in state_dict.items() if key.rsplit(".", 1)[-1] not in OPENAI_NON_WEIGHT_KEYS}


def convert_openai_clip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI-layout CLIP -> transformers CLIP names; any key outside the table is an error."""
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        mapped = convert_clip_key(key, tensor)
        if mapped is None:
            unknown.append(key)
        else:
            converted.update(mapped)
    if unknown:
        raise ValueError(f"keys outside OpenAI's CLIP layout (is this an OpenAI-style ViT CLIP?): {sorted(unknown)}")
    return converted


def openai_clip_config(
    state_dict: dict[str, torch.Tensor], vision_heads: int | None = None, text_heads: int | None = None
) -> dict[str, Any]:
    """transformers CLIPConfig fields for an OpenAI-layout state dict (heads: `width // 64`)."""
    if "visual.proj" not in state_dict:
        raise ValueError("not an OpenAI-style ViT CLIP: no visual.proj (ResNet CLIPs are not supported).")
    sizes = infer_clip_sizes(state_dict)
    return {
        "text_config": {
            "vocab_size": sizes.vocab_size,
            "hidden_size": sizes.text_width,
            "intermediate_size": sizes.text_intermediate,
            "num_hidden_layers": sizes.text_layers,
            "num_attention_heads": text_heads or sizes.text_width // 64,
            "max_position_embeddings": sizes.context_length,
            "projection_dim": sizes.projection_dim,
            # CLIP's tokenizer: start and end tokens are the two highest ids; it pads with the end token.
            "bos_token_id": sizes.vocab_size - 2,
            "eos_token_id": sizes.vocab_size - 1,
            "pad_token_id": sizes.vocab_size - 1,
        },
        "vision_config": {
            "hidden_size": sizes.vision_width,
            "intermediate_size": sizes.vision_intermediate,
            "num_hidden_layers": sizes.vision_layers,
            "num_attention_heads": vision_heads or sizes.vision_width // 64,
            "image_size": sizes.image_size,
            "patch_size": sizes.patch_size,
            "projection_dim": sizes.projection_dim,
        },
        "projection_dim": sizes.projection_dim,
    }


# ------------------------------------------------------------------------------------ building
def clip_reference_model(clip_fields: dict[str, Any], clip_state_dict: dict[str, torch.Tensor]):
    """transformers' own CLIPModel holding the source weights: the reference for the text check."""
    from transformers import CLIPConfig, CLIPModel

    clip = CLIPModel(CLIPConfig(**clip_fields)).eval()
    incompatible = clip.load_state_dict(clip_state_dict, strict=False)
    missing = [key for key in incompatible.missing_keys if not key.endswith("position_ids")]
    if missing or incompatible.unexpected_keys:
        raise ValueError(
            f"the source weights do not fill a CLIPModel: missing {missing}, extra {incompatible.unexpected_keys}"
        )
    return clip


def sample_token_ids(config: E2CLIPConfig, batch_size: int = 4, length: int = 12) -> torch.Tensor:
    """Deterministic token sequences `[start, ..., end, end padding]` of several lengths."""
    text = config.text_config
    generator = torch.Generator().manual_seed(0)
    length = min(length, text.max_position_embeddings)
    input_ids = torch.randint(1, text.vocab_size - 2, (batch_size, length), generator=generator)
    input_ids[:, 0] = text.bos_token_id
    for row in range(batch_size):
        end = max(2, length - 1 - 2 * row)
        input_ids[row, end:] = text.eos_token_id
    return input_ids


@torch.no_grad()
def check_text_embeddings(model: E2CLIPModel, references: dict[str, Any]) -> dict[str, float]:
    """Max abs difference of E2's text embeddings and each reference's; raises past the tolerance."""
    input_ids = sample_token_ids(model.config)
    ours, _ = model._text_embeds(input_ids)
    differences = {}
    for name, encode in references.items():
        theirs = encode(input_ids)
        theirs = projected_features(theirs)
        differences[name] = float((ours - theirs.float()).abs().max())
        if differences[name] > TEXT_CHECK_TOLERANCE:
            raise ValueError(
                f"text embeddings differ from {name} by {differences[name]:.2e} (tolerance {TEXT_CHECK_TOLERANCE}); "
                "the conversion is wrong, nothing was saved."
            )
    return differences


def init_from_clip(
    clip: str | Path,
    output_dir: str | Path | None = None,
    tokenizer: str | None = None,
    projection_init: str = "clip",
    vision_heads: int | None = None,
    text_heads: int | None = None,
    image_fit: str = "crop",
    **config_overrides: Any,
) -> tuple[E2CLIPModel, E2CLIPProcessor | None, dict[str, float]]:
    """Builds E2 from `clip`, checks its text embeddings against the source, saves it with its
    processor to `output_dir` (when given). Returns the model, the processor and the check's
    max abs differences."""
    image_fit = checked_image_fit(image_fit)  # before loading anything
    source = Path(clip)
    if source.is_file() or source.suffix in WEIGHT_SUFFIXES:
        if tokenizer is None:
            raise ValueError(f"{source} holds weights only: name its tokenizer with --tokenizer.")
        model, references = _from_openai_file(source, projection_init, vision_heads, text_heads, config_overrides)
        processor = processor_with_tokenizer(tokenizer, model.config)
    else:
        from transformers import CLIPModel

        clip_model = CLIPModel.from_pretrained(str(clip)).eval()
        config = E2CLIPConfig.from_clip_config(clip_model.config, **config_overrides)
        model = from_clip_state_dict(config, clip_model.state_dict(), projection_init, source=str(clip))
        references = {f"transformers CLIPModel({clip})": lambda ids: clip_model.get_text_features(input_ids=ids)}
        if tokenizer is None:
            processor = E2CLIPProcessor.from_pretrained(str(clip), entities=model.config.entities)
        else:
            processor = processor_with_tokenizer(tokenizer, model.config)
    processor.image_processor.image_fit = image_fit
    model.eval()
    differences = check_text_embeddings(model, references)
    if output_dir is not None:
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
    return model, processor, differences


def _from_openai_file(source, projection_init, vision_heads, text_heads, config_overrides):
    state_dict = load_openai_layout(source)
    clip_fields = openai_clip_config(state_dict, vision_heads, text_heads)
    clip_state_dict = convert_openai_clip(state_dict)
    config = E2CLIPConfig(**clip_fields, **config_overrides)
    model = from_clip_state_dict(config, clip_state_dict, projection_init, source=str(source))
    clip = clip_reference_model(clip_fields, clip_state_dict)
    references = {"transformers CLIPModel with the same weights": lambda ids: clip.get_text_features(input_ids=ids)}
    return model, references


# ------------------------------------------------------------------------------------ command line
def config_overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {
        "entities": args.entities,
        "fusion_layers": args.fusion_layers,
        "region_loss": args.region_loss,
        "gumbel_tau": args.gumbel_tau,
        "selection_attention": args.selection_attention,
    }
    if args.tokens_per_entity is not None:
        counts = args.tokens_per_entity
        overrides["tokens_per_entity"] = counts[0] if len(counts) == 1 else counts
    if args.keep_patches:
        overrides["drop_patches_after_fusion"] = False
    return {key: value for key, value in overrides.items() if value is not None}


def run(args: argparse.Namespace) -> None:
    model, _, differences = init_from_clip(
        args.clip,
        args.output_dir,
        tokenizer=args.tokenizer,
        projection_init=args.projection_init,
        vision_heads=args.vision_heads,
        text_heads=args.text_heads,
        image_fit=args.image_fit,
        **config_overrides_from(args),
    )
    for reference, difference in differences.items():
        print(f"text embeddings match {reference}: max abs difference {difference:.2e}")
    report = count_new_parameters(model)
    print(f"new parameters ({report.e2_new_parameters:,}, {100 * report.share_of_clip:.2f}% of CLIP's):")
    shapes = dict(model.named_parameters())
    for name in model.e2_parameter_names():
        print(f"  {name} {tuple(shapes[name].shape)}")
    print(f"saved E2 (entities: {', '.join(model.config.entities)}) to {args.output_dir}")


def main(argv: list[str] | None = None) -> None:
    command_main(add_init_from_clip_arguments, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
