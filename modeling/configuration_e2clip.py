"""Configuration of E2 (Easy Regional Contrastive Learning of Expressive Fashion Representations).

E2 is CLIP with a few learnable *selection tokens* in the image tower. The text and vision
sub-configurations keep the field names and defaults of transformers' CLIP (ViT-B/32 sizes), so
a CLIP checkpoint maps onto E2 one to one; E2's own numbers live in `E2CLIPConfig`.

This file is copied into every Hub checkpoint: it imports only the standard library and
transformers.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig


class VisionTokenLayout:
    """The image tower's sequence, `[selection tokens, CLS, patches]`: the selection tokens and CLS
    are its prefix (as timm's `num_prefix_tokens`), the patches follow in row-major order. After the
    last fusion block the patches are dropped and only the prefix remains.

    Slicing helpers take `[batch, sequence, ...]` tensors (or attention rows over the sequence).
    """

    def __init__(self, num_selection_tokens: int, num_patches: int):
        self.num_selection_tokens = num_selection_tokens
        self.num_patches = num_patches

    @property
    def cls_index(self) -> int:
        return self.num_selection_tokens

    @property
    def num_prefix_tokens(self) -> int:
        """Selection tokens and CLS."""
        return self.num_selection_tokens + 1

    @property
    def length(self) -> int:
        """The full sequence, patches included."""
        return self.num_prefix_tokens + self.num_patches

    def selection(self, states):
        return states[:, : self.num_selection_tokens]

    def cls(self, states):
        return states[:, self.cls_index]

    def prefix(self, states):
        return states[:, : self.num_prefix_tokens]

    def patches(self, states):
        return states[:, self.num_prefix_tokens :]

    def __repr__(self) -> str:
        return f"VisionTokenLayout(num_selection_tokens={self.num_selection_tokens}, num_patches={self.num_patches})"


DEFAULT_ENTITIES = ("brand", "season", "subcategory", "composition")
REGION_LOSS_VARIANTS = ("clip", "multi_positive")
SELECTION_ATTENTION = ("full", "isolated")


class E2CLIPTextConfig(PretrainedConfig):
    r"""
    The text tower of E2: CLIP's text transformer, unchanged.

    Args:
        vocab_size (`int`, *optional*, defaults to 49408):
            Size of the BPE vocabulary.
        hidden_size (`int`, *optional*, defaults to 512):
            Width of the token embeddings and of every encoder layer.
        intermediate_size (`int`, *optional*, defaults to 2048):
            Width of the hidden layer of each MLP.
        projection_dim (`int`, *optional*, defaults to 512):
            Kept for compatibility with CLIP configs; the joint embedding size is
            `E2CLIPConfig.projection_dim`.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of encoder layers.
        num_attention_heads (`int`, *optional*, defaults to 8):
            Attention heads per layer; must divide `hidden_size`.
        max_position_embeddings (`int`, *optional*, defaults to 77):
            Context length: the longest token sequence the tower accepts.
        hidden_act (`str`, *optional*, defaults to `"quick_gelu"`):
            Activation of the MLPs (any name of `transformers.activations.ACT2FN`).
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every layer norm.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities (training only).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of embeddings.
        initializer_factor (`float`, *optional*, defaults to 1.0):
            Multiplier of every initialisation standard deviation.
        pad_token_id (`int`, *optional*, defaults to 1):
        bos_token_id (`int`, *optional*, defaults to 49406):
        eos_token_id (`int`, *optional*, defaults to 49407):
            The text embedding is read at the first `eos_token_id` of each sequence. As in
            transformers' CLIP, the legacy value 2 of old CLIP configs means "the highest id of the
            sequence" instead.
    """

    model_type = "e2clip_text_model"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size: int = 49408,
        hidden_size: int = 512,
        intermediate_size: int = 2048,
        projection_dim: int = 512,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 8,
        max_position_embeddings: int = 77,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        initializer_factor: float = 1.0,
        pad_token_id: int = 1,
        bos_token_id: int = 49406,
        eos_token_id: int = 49407,
        **kwargs: Any,
    ):
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.projection_dim = projection_dim
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor
        _check_heads(self, "text_config")


class E2CLIPVisionConfig(PretrainedConfig):
    r"""
    The image tower of E2: CLIP's vision transformer. The selection tokens and fusion blocks are
    configured on `E2CLIPConfig`, because they are E2's additions.

    Args:
        hidden_size (`int`, *optional*, defaults to 768):
            Width of every encoder layer (the paper's ViT-B/32).
        intermediate_size (`int`, *optional*, defaults to 3072):
            Width of the hidden layer of each MLP.
        projection_dim (`int`, *optional*, defaults to 512):
            Kept for compatibility with CLIP configs; see `E2CLIPConfig.projection_dim`.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of encoder layers.
        num_attention_heads (`int`, *optional*, defaults to 12):
            Attention heads per layer; must divide `hidden_size`.
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input images.
        image_size (`int`, *optional*, defaults to 224):
            Side of the (square) input images in pixels.
        patch_size (`int`, *optional*, defaults to 32):
            Side of one patch in pixels; must divide `image_size`.
        hidden_act (`str`, *optional*, defaults to `"quick_gelu"`):
            Activation of the MLPs.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every layer norm.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities (training only).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of embeddings.
        initializer_factor (`float`, *optional*, defaults to 1.0):
            Multiplier of every initialisation standard deviation.
    """

    model_type = "e2clip_vision_model"
    base_config_key = "vision_config"

    def __init__(
        self,
        hidden_size: int = 768,
        intermediate_size: int = 3072,
        projection_dim: int = 512,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        num_channels: int = 3,
        image_size: int = 224,
        patch_size: int = 32,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        initializer_factor: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.projection_dim = projection_dim
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_channels = num_channels
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor
        _check_heads(self, "vision_config")
        if image_size % patch_size != 0:
            raise ValueError(
                f"vision_config: image_size ({image_size}) must be a multiple of patch_size ({patch_size})."
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class E2CLIPConfig(PretrainedConfig):
    r"""
    Configuration of [`E2CLIPModel`]: CLIP's two towers plus E2's selection tokens, fusion blocks,
    entity heads and losses. With `entities=[]` the model is exactly CLIP.

    Args:
        text_config (`dict` or `E2CLIPTextConfig`, *optional*):
            The text tower (CLIP's fields and defaults).
        vision_config (`dict` or `E2CLIPVisionConfig`, *optional*):
            The image tower (CLIP's fields and defaults, ViT-B/32).
        projection_dim (`int`, *optional*, defaults to 512):
            Size of the joint embedding space (global, regional and text embeddings).
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592):
            Initial value of the learnable log temperature (CLIP's `log(1 / 0.07)`).
        initializer_factor (`float`, *optional*, defaults to 1.0):
            Scales the initial standard deviations of the parameters outside the towers (projections,
            selection-token heads, fusion blocks); the towers use their own config's factor.
        entities (`list[str]`, *optional*, defaults to `["brand", "season", "subcategory", "composition"]`):
            The ordered tag entities. Each owns a contiguous group of selection tokens, a layer norm
            and a projection, and is contrasted with the text of its tag. Names must be unique,
            non-empty identifiers-like strings. An empty list gives plain CLIP.
        tokens_per_entity (`int` or `list[int]`, *optional*, defaults to 2):
            Selection tokens of each entity: one number for all, or one per entity.
        fusion_layers (`list[int]`, *optional*, defaults to `[7, 10]`):
            0-based indices of the vision layers after which a fusion block runs (the paper: after
            the 8th and the 11th of 12 layers). Strictly increasing, each below
            `vision_config.num_hidden_layers`. Empty with entities is the paper's "without fusion
            blocks" ablation: the selection tokens are plain prefix tokens that see the image by
            attention only, no patch is chosen or dropped, and they are still pooled into the
            regional embeddings (`selection_indices` is then `None`).
        drop_patches_after_fusion (`bool`, *optional*, defaults to `True`):
            Drop the patch tokens after the last fusion block, so the remaining layers only see the
            selection tokens and CLS (the paper).
        gumbel_tau (`float`, *optional*, defaults to 1.0):
            Temperature of the straight-through Gumbel-softmax selection used in training. In eval
            mode the selection is the plain argmax, so embeddings are deterministic.
        selection_attention (`str`, *optional*, defaults to `"full"`):
            What the selection tokens see in the vision layers. `"full"` (the paper): plain
            self-attention over every token, so they also gather patch content by attention.
            `"isolated"`: selection tokens attend only to selection tokens, so patch content reaches
            them only through the patch each one chooses in a fusion block (CLS and patches still
            attend to everything). An option beyond the paper: it makes the choice the tokens' only
            view of the image, which is what makes them look for their entity's detail.
        selection_scale (`float`, *optional*):
            Factor on the query-key scores of the fusion blocks. Defaults to
            `1 / sqrt(vision_config.hidden_size)`, as the reference. The chosen patch (forward
            output) does not depend on it; the gradients of the Gumbel-softmax do.
        global_loss_weight (`float`, *optional*, defaults to 0.5):
            Weight of the image-text contrastive loss in the total loss.
        region_loss_weight (`float`, *optional*, defaults to 0.5):
            Weight of the mean of the per-entity region contrastive losses.
        region_loss (`str`, *optional*, defaults to `"clip"`):
            `"clip"`: the paper's in-batch InfoNCE between each entity's regional embedding and its
            tag text (items sharing a tag are each other's negatives). `"multi_positive"`: items
            of a batch that share the same tag text are positives of each other instead of false
            negatives: an image is scored against the batch's distinct tags, and a tag against
            all images, every image carrying it being a positive. Without shared tags both agree.
    """

    model_type = "e2clip"
    # transformers.Trainer keeps the other output fields as predictions: (text_embeds, image_embeds)
    keys_to_ignore_at_inference = [
        "global_loss",
        "region_loss",
        "logits_per_image",
        "logits_per_text",
        "region_embeds",
        "tag_embeds",
        "tag_groups",
        "selection_indices",
        "text_model_output",
        "vision_model_output",
    ]
    sub_configs = {"text_config": E2CLIPTextConfig, "vision_config": E2CLIPVisionConfig}

    def __init__(
        self,
        text_config: dict | E2CLIPTextConfig | None = None,
        vision_config: dict | E2CLIPVisionConfig | None = None,
        projection_dim: int = 512,
        logit_scale_init_value: float = 2.6592,
        initializer_factor: float = 1.0,
        entities: list[str] | tuple[str, ...] | None = DEFAULT_ENTITIES,
        tokens_per_entity: int | list[int] = 2,
        fusion_layers: list[int] | tuple[int, ...] = (7, 10),
        drop_patches_after_fusion: bool = True,
        gumbel_tau: float = 1.0,
        selection_attention: str = "full",
        selection_scale: float | None = None,
        global_loss_weight: float = 0.5,
        region_loss_weight: float = 0.5,
        region_loss: str = "clip",
        **kwargs: Any,
    ):
        # the towers first: `attn_implementation` (in kwargs) then reaches them, as in CLIPConfig
        self.text_config = _as_sub_config(text_config, E2CLIPTextConfig)
        self.vision_config = _as_sub_config(vision_config, E2CLIPVisionConfig)
        super().__init__(**kwargs)
        self.projection_dim = projection_dim
        self.logit_scale_init_value = logit_scale_init_value
        self.initializer_factor = initializer_factor
        self.entities = entities
        self.tokens_per_entity = tokens_per_entity
        self.fusion_layers = fusion_layers
        self.drop_patches_after_fusion = drop_patches_after_fusion
        self.gumbel_tau = gumbel_tau
        self.selection_attention = selection_attention
        if selection_scale is None:
            selection_scale = 1.0 / math.sqrt(self.vision_config.hidden_size)
        self.selection_scale = selection_scale
        self.global_loss_weight = global_loss_weight
        self.region_loss_weight = region_loss_weight
        self.region_loss = region_loss
        self.check_e2_fields()

    @classmethod
    def from_clip_config(cls, clip_config: PretrainedConfig, **overrides: Any) -> E2CLIPConfig:
        """E2's config for a transformers `CLIPConfig`: its towers and projection, plus overrides."""
        fields = dict(
            text_config=clip_config.text_config.to_dict(),
            vision_config=clip_config.vision_config.to_dict(),
            projection_dim=clip_config.projection_dim,
            logit_scale_init_value=clip_config.logit_scale_init_value,
        )
        fields.update(overrides)
        return cls(**fields)

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_selection_tokens(self) -> int:
        return sum(self.tokens_per_entity)

    @property
    def entity_token_slices(self) -> list[tuple[int, int]]:
        """`(start, end)` positions of each entity's selection tokens in the token sequence."""
        slices, start = [], 0
        for count in self.tokens_per_entity:
            slices.append((start, start + count))
            start += count
        return slices

    @property
    def token_layout(self) -> VisionTokenLayout:
        """Where the selection tokens, CLS and patches sit in the image tower's sequence."""
        return VisionTokenLayout(self.num_selection_tokens, self.vision_config.num_patches)

    @property
    def active_fusion_layers(self) -> list[int]:
        """The fusion layers that really run: none without selection tokens."""
        return self.fusion_layers if self.num_selection_tokens > 0 else []

    # ------------------------------------------------------------------ validation
    def check_e2_fields(self) -> None:
        """Normalises E2's fields (`tokens_per_entity` as a list, ...) and validates them.

        Runs in `__init__` and again when a model is built, since `from_pretrained(...,
        entities=...)` sets overrides after `__init__`.
        """
        self.entities = list(self.entities or [])
        if isinstance(self.tokens_per_entity, int):
            self.tokens_per_entity = [self.tokens_per_entity] * len(self.entities)
        self.tokens_per_entity = list(self.tokens_per_entity)
        self.fusion_layers = list(self.fusion_layers)
        if self.projection_dim <= 0:
            raise ValueError(f"projection_dim must be positive, got {self.projection_dim}.")
        names = self.entities
        if any(not isinstance(name, str) or not name.strip() for name in names):
            raise ValueError(f"entities must be non-empty strings, got {names}.")
        if len(set(names)) != len(names):
            raise ValueError(f"entities must be unique, got {names}.")
        if len(self.tokens_per_entity) != len(names):
            raise ValueError(
                f"tokens_per_entity has {len(self.tokens_per_entity)} counts for {len(names)} entities {names}."
            )
        if any(not isinstance(count, int) or count < 1 for count in self.tokens_per_entity):
            raise ValueError(f"tokens_per_entity must be positive integers, got {self.tokens_per_entity}.")
        num_layers = self.vision_config.num_hidden_layers
        layers = self.fusion_layers
        if names and any(not isinstance(index, int) or not 0 <= index < num_layers for index in layers):
            raise ValueError(f"fusion_layers must be 0-based vision layer indices below {num_layers}, got {layers}.")
        if any(later <= earlier for earlier, later in zip(layers, layers[1:])):
            raise ValueError(f"fusion_layers must be strictly increasing, got {layers}.")
        if names and not layers and self.selection_attention == "isolated":
            raise ValueError(
                "selection_attention='isolated' needs at least one fusion layer (fusion_layers is empty): isolated "
                "selection tokens see the image only through the patches they choose in fusion blocks."
            )
        if self.gumbel_tau <= 0:
            raise ValueError(f"gumbel_tau must be positive, got {self.gumbel_tau}.")
        if self.selection_attention not in SELECTION_ATTENTION:
            raise ValueError(
                f"selection_attention must be one of {SELECTION_ATTENTION}, got {self.selection_attention!r}."
            )
        if self.selection_scale <= 0:
            raise ValueError(f"selection_scale must be positive, got {self.selection_scale}.")
        if self.global_loss_weight < 0 or self.region_loss_weight < 0:
            raise ValueError(
                "global_loss_weight and region_loss_weight must be non-negative, got "
                f"{self.global_loss_weight} and {self.region_loss_weight}."
            )
        if self.region_loss not in REGION_LOSS_VARIANTS:
            raise ValueError(f"region_loss must be one of {REGION_LOSS_VARIANTS}, got {self.region_loss!r}.")


def _as_sub_config(value: Any, config_class: type[PretrainedConfig]) -> PretrainedConfig:
    if value is None:
        return config_class()
    if isinstance(value, config_class):
        return value
    if isinstance(value, PretrainedConfig):  # e.g. a transformers CLIPTextConfig
        value = value.to_dict()
    if isinstance(value, dict):
        value = {key: item for key, item in value.items() if key != "model_type"}
        return config_class(**value)
    raise ValueError(f"{config_class.base_config_key} must be a dict or {config_class.__name__}, got {type(value)}.")


def _check_heads(config: PretrainedConfig, name: str) -> None:
    if config.hidden_size % config.num_attention_heads != 0:
        raise ValueError(
            f"{name}: hidden_size ({config.hidden_size}) is not a multiple of "
            f"num_attention_heads ({config.num_attention_heads})."
        )


__all__ = ["E2CLIPConfig", "E2CLIPTextConfig", "E2CLIPVisionConfig", "VisionTokenLayout"]
