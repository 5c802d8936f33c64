"""E2: CLIP with selection tokens that pick the image patches carrying fashion tag details.

The backbone keeps transformers CLIP's parameter names (`text_model.*`, `vision_model.*`,
`visual_projection`, `text_projection`, `logit_scale`), so any CLIP checkpoint loads and only E2's
additions are new:

- `vision_model.selection_tokens`           [num_selection_tokens, vision_width]
- `vision_model.fusion_blocks.{j}.{q,k,v}_proj` one block per `config.fusion_layers[j]`
- `region_head.layer_norms.{e}` / `region_head.projections.{e}` one per `config.entities[e]`

The layers are owned here rather than imported from transformers' CLIP, whose internals differ
between transformers 4.x and 5.x; attention goes through transformers' attention interface
(`attn_implementation` "sdpa", the default, or "eager"). This file is copied into every Hub
checkpoint: it imports only the standard library, torch and transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_e2clip import E2CLIPConfig, E2CLIPTextConfig, E2CLIPVisionConfig
from .loss_e2clip import E2CLIPLoss
from .packaging_e2clip import write_deployment_files

# transformers 5.x returns a `BaseModelOutputWithPooling` from `get_*_features`, 4.x a tensor.
FEATURES_AS_MODEL_OUTPUT = int(transformers.__version__.split(".")[0]) >= 5
# Old CLIP configs store eos_token_id=2; transformers' CLIP then pools at the highest token id.
LEGACY_EOS_TOKEN_ID = 2


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
@dataclass
class E2CLIPVisionOutput(ModelOutput):
    """
    Output of the image tower.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            The last layer's tokens, `[selection tokens, CLS, patches]`; without the patches when
            they were dropped after the last fusion block.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            `post_layernorm` of the CLS token.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The embeddings and each layer's output (`output_hidden_states=True`).
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Each layer's attention probabilities `(batch_size, num_heads, sequence_length,
            sequence_length)` (`output_attentions=True`); layers after the patches were dropped have
            the shorter sequence `[selection tokens, CLS]`.
        selection_indices (`torch.LongTensor`, *optional*):
            Shape `(batch_size, num_fusion_blocks, num_selection_tokens)`: the patch (0-based,
            row-major over the patch grid) each selection token chose in each fusion block;
            `None` without selection tokens.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    selection_indices: torch.LongTensor | None = None


@dataclass
class E2CLIPOutput(ModelOutput):
    """
    Output of [`E2CLIPModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned with `return_loss=True`):
            `global_loss_weight * global_loss + region_loss_weight * region_loss`; just the global
            loss when there is no region loss (no entities, or no tags given).
        global_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Symmetric image-text InfoNCE (CLIP's loss).
        region_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean over entities of the symmetric InfoNCE between regional embeddings and tag texts.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Scaled cosine similarities of image and text embeddings.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            The transpose of `logits_per_image`.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            L2-normalised projected text embeddings (as `CLIPModel`; `get_text_features` gives
            them unnormalised).
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            L2-normalised projected global image embeddings.
        region_embeds (`torch.FloatTensor` of shape `(batch_size, num_entities, projection_dim)`):
            L2-normalised projected regional embedding of each entity.
        tag_embeds (`torch.FloatTensor` of shape `(batch_size, num_entities, projection_dim)`, *optional*):
            L2-normalised text embeddings of the tags (given `tag_input_ids`); zeros where missing.
        tag_groups (`torch.LongTensor` of shape `(batch_size, num_entities)`, *optional*):
            Equal for equal tag texts (a non-negative hash of the tokens), -1 where the tag is
            missing.
        selection_indices (`torch.LongTensor` of shape `(batch_size, num_fusion_blocks, num_selection_tokens)`):
            The patch each selection token chose in each fusion block.
        text_model_output (`BaseModelOutputWithPooling`):
            The text tower's output.
        vision_model_output (`E2CLIPVisionOutput`):
            The image tower's output.
    """

    loss: torch.FloatTensor | None = None
    global_loss: torch.FloatTensor | None = None
    region_loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    region_embeds: torch.FloatTensor | None = None
    tag_embeds: torch.FloatTensor | None = None
    tag_groups: torch.LongTensor | None = None
    selection_indices: torch.LongTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: E2CLIPVisionOutput | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self[key].to_tuple() if key.endswith("_model_output") else self[key] for key in self.keys())


# ---------------------------------------------------------------------------------------------
# Building blocks (CLIP's, with CLIP's parameter names)
# ---------------------------------------------------------------------------------------------
class E2CLIPVisionEmbeddings(nn.Module):
    """Patch embedding, CLS token and learned positions (CLS + patches only)."""

    def __init__(self, config: E2CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.class_embedding = nn.Parameter(torch.empty(self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, self.embed_dim, kernel_size=config.patch_size, stride=config.patch_size, bias=False
        )
        self.num_patches = config.num_patches
        self.num_positions = self.num_patches + 1
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch_size = pixel_values.shape[0]
        dtype = self.patch_embedding.weight.dtype
        patch_embeds = self.patch_embedding(pixel_values.to(dtype))  # [batch, width, grid, grid]
        patch_embeds = patch_embeds.flatten(2).transpose(1, 2)  # [batch, num_patches, width]
        class_embeds = self.class_embedding.expand(batch_size, 1, -1)  # [batch, 1, width]
        embeddings = torch.cat([class_embeds, patch_embeds], dim=1)  # [batch, 1 + num_patches, width]
        positions = torch.arange(self.num_positions, device=embeddings.device)
        return embeddings + self.position_embedding(positions)


class E2CLIPTextEmbeddings(nn.Module):
    def __init__(self, config: E2CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        sequence_length = input_ids.shape[-1]
        max_length = self.position_embedding.num_embeddings
        if sequence_length > max_length:
            raise ValueError(
                f"input_ids has {sequence_length} tokens but the text tower's context length is {max_length}; "
                "tokenize with truncation (E2CLIPProcessor does)."
            )
        if position_ids is None:
            position_ids = torch.arange(sequence_length, device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E2's eager attention, with the signature of transformers' attention interface: an explicit
    softmax over `[batch, heads, sequence, head_dim]` queries and keys. `attention_mask` is boolean,
    True where a query may attend to a key. Returns the attended values `[batch, sequence, heads,
    head_dim]` and the probabilities `[batch, heads, sequence, sequence]`."""
    scores = query @ key.transpose(-1, -2) * scaling
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    attended = F.dropout(weights, p=dropout, training=module.training) @ value
    return attended.transpose(1, 2).contiguous(), weights


class E2CLIPAttention(nn.Module):
    """Multi-head self-attention through transformers' attention interface: the implementation the
    config names (`attn_implementation="sdpa"`, the default, or `"eager"`). Attention probabilities
    (`output_attentions`) always come from the eager function."""

    def __init__(self, config: E2CLIPTextConfig | E2CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch_size, sequence_length, _ = states.shape
        states = states.view(batch_size, sequence_length, self.num_heads, self.head_dim)
        return states.transpose(1, 2)  # [batch, heads, sequence, head_dim]

    def _attention_function(self, output_attentions: bool) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
        """The function transformers registers for the config's implementation; E2's own for "eager"."""
        if output_attentions:
            return eager_attention_forward  # the only one that returns the probabilities
        if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):  # transformers 5.x
            return ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        if self.config._attn_implementation == "eager":  # transformers 4.x
            return eager_attention_forward
        return ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`attention_mask`: boolean, True where a query may attend to a key."""
        batch_size, sequence_length, _ = hidden_states.shape
        query = self._split_heads(self.q_proj(hidden_states))
        key = self._split_heads(self.k_proj(hidden_states))
        value = self._split_heads(self.v_proj(hidden_states))
        attended, weights = self._attention_function(output_attentions)(
            self, query, key, value, attention_mask,
            scaling=self.scale, dropout=self.dropout if self.training else 0.0, is_causal=False,
        )  # fmt: skip
        attended = attended.reshape(batch_size, sequence_length, self.embed_dim)  # [batch, seq, width]
        return self.out_proj(attended), weights if output_attentions else None


class E2CLIPMLP(nn.Module):
    def __init__(self, config: E2CLIPTextConfig | E2CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class E2CLIPEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: attention and MLP, each in a residual branch. A
    `GradientCheckpointingLayer`: `model.gradient_checkpointing_enable()` makes transformers
    recompute it in the backward pass."""

    def __init__(self, config: E2CLIPTextConfig | E2CLIPVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = E2CLIPAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = E2CLIPMLP(config)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, attention_weights = self.self_attn(self.layer_norm1(hidden_states), attention_mask, output_attentions)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, attention_weights


class E2CLIPEncoder(nn.Module):
    """A stack of encoder layers; `forward` can run a contiguous range of them."""

    def __init__(self, config: E2CLIPTextConfig | E2CLIPVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([E2CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        start: int = 0,
        end: int | None = None,
        all_hidden_states: list[torch.Tensor] | None = None,
        all_attentions: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Runs layers `start..end-1`; appends each output to `all_hidden_states` and each layer's
        attention probabilities to `all_attentions` when given."""
        output_attentions = all_attentions is not None
        for layer in self.layers[start:end]:
            hidden_states, attention_weights = layer(hidden_states, attention_mask, output_attentions)
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
            if output_attentions:
                all_attentions.append(attention_weights)
        return hidden_states


# ---------------------------------------------------------------------------------------------
# E2's additions
# ---------------------------------------------------------------------------------------------
class E2CLIPFusionBlock(nn.Module):
    """Each selection token picks one patch and averages itself with that patch's value.

    Works on the raw residual stream `[selection tokens, CLS, patches]`; CLS and patches pass
    through unchanged. Training: straight-through hard Gumbel-softmax over the query-key scores.
    Eval: argmax of the scores, so the choice is deterministic.
    """

    def __init__(self, config: E2CLIPConfig):
        super().__init__()
        width = config.vision_config.hidden_size
        self.layout = config.token_layout
        self.scale = config.selection_scale
        self.gumbel_tau = config.gumbel_tau
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)

    def select(self, scores: torch.Tensor) -> torch.Tensor:
        """One-hot choice over the last dimension, with straight-through gradients in training."""
        if self.training:
            return F.gumbel_softmax(scores, tau=self.gumbel_tau, hard=True, dim=-1)
        chosen = scores.argmax(dim=-1)
        return F.one_hot(chosen, scores.shape[-1]).to(scores.dtype)

    def selection_scores(self, selection: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Query-key scores `[batch, num_selection, num_patches]` in float32, also under autocast and
        in a bfloat16/float16 model: the choice is an argmax, and half-precision rounding of near-tied
        scores would change the chosen patch. (Two small projections; the cost is negligible.)"""
        with torch.autocast(device_type=selection.device.type, enabled=False):
            queries = F.linear(selection.float(), self.q_proj.weight.float())
            keys = F.linear(patches.float(), self.k_proj.weight.float())
            return queries @ keys.transpose(1, 2) * self.scale

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        selection = self.layout.selection(hidden_states)  # [batch, num_selection, width]
        patches = self.layout.patches(hidden_states)  # [batch, num_patches, width]
        scores = self.selection_scores(selection, patches)
        choice = self.select(scores).to(hidden_states.dtype)  # [batch, num_selection, num_patches]
        fused = (choice @ self.v_proj(patches) + selection) / 2
        hidden_states = torch.cat([fused, hidden_states[:, self.layout.cls_index :]], dim=1)
        return hidden_states, choice.argmax(dim=-1)


class E2CLIPRegionHead(nn.Module):
    """Separated average pooling: each entity's tokens get their own norm, mean and projection."""

    def __init__(self, config: E2CLIPConfig):
        super().__init__()
        width = config.vision_config.hidden_size
        eps = config.vision_config.layer_norm_eps
        self.token_slices = config.entity_token_slices
        self.layer_norms = nn.ModuleList([nn.LayerNorm(width, eps=eps) for _ in config.entities])
        self.projections = nn.ModuleList([nn.Linear(width, config.projection_dim, bias=False) for _ in config.entities])

    def forward(self, selection_states: torch.Tensor) -> torch.Tensor:
        """`[batch, num_selection, width]` -> `[batch, num_entities, projection_dim]`."""
        region_embeds = []
        for (start, end), layer_norm, projection in zip(self.token_slices, self.layer_norms, self.projections):
            pooled = layer_norm(selection_states[:, start:end]).mean(dim=1)  # [batch, width]
            region_embeds.append(projection(pooled))
        return torch.stack(region_embeds, dim=1)


# ---------------------------------------------------------------------------------------------
# Towers
# ---------------------------------------------------------------------------------------------
class E2CLIPTextTransformer(nn.Module):
    """CLIP's text tower: causal transformer, read at the end-of-text token."""

    _supports_sdpa = True  # what transformers' composite-model checks read on each tower

    def __init__(self, config: E2CLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = E2CLIPTextEmbeddings(config)
        self.encoder = E2CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def _attention_mask(self, attention_mask: torch.Tensor | None, sequence_length: int, device) -> torch.Tensor:
        """Boolean `[batch or 1, 1, seq, seq]` mask: causal, minus padded keys (the diagonal stays)."""
        allowed = torch.ones(sequence_length, sequence_length, dtype=torch.bool, device=device).tril()
        if attention_mask is None:
            return allowed[None, None]
        keys = attention_mask.bool()[:, None, None, :]  # [batch, 1, 1, seq]
        diagonal = torch.eye(sequence_length, dtype=torch.bool, device=device)
        return allowed & (keys | diagonal)

    def _end_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        eos_token_id = self.config.eos_token_id
        if eos_token_id == LEGACY_EOS_TOKEN_ID:
            return input_ids.argmax(dim=-1)
        is_end = input_ids == eos_token_id
        first_end = is_end.int().argmax(dim=-1)
        if attention_mask is None:
            last_token = torch.full_like(first_end, input_ids.shape[-1] - 1)
        else:
            last_token = attention_mask.long().sum(dim=-1).clamp_min(1) - 1
        return torch.where(is_end.any(dim=-1), first_end, last_token)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        hidden_states = self.embeddings(input_ids, position_ids)  # [batch, seq, width]
        mask = self._attention_mask(attention_mask, input_ids.shape[-1], input_ids.device)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        hidden_states = self.encoder(
            hidden_states, mask, all_hidden_states=all_hidden_states, all_attentions=all_attentions
        )
        last_hidden_state = self.final_layer_norm(hidden_states)
        batch_index = torch.arange(input_ids.shape[0], device=input_ids.device)
        pooled_output = last_hidden_state[batch_index, self._end_positions(input_ids, attention_mask)]
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled_output,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


class E2CLIPVisionTransformer(nn.Module):
    """CLIP's ViT with `num_selection_tokens` learnable tokens in front and fusion blocks inside.

    Sequence: `[selection tokens, CLS, patches]`; the selection tokens have no position
    embedding. A fusion block runs after each layer of `config.fusion_layers`; after the last one
    the patches are dropped (`drop_patches_after_fusion`).
    """

    _supports_sdpa = True  # what transformers' composite-model checks read on each tower

    def __init__(self, config: E2CLIPConfig):
        super().__init__()
        vision_config = config.vision_config
        self.config = vision_config
        self.num_selection_tokens = config.num_selection_tokens
        self.layout = config.token_layout
        self.fusion_layers = config.active_fusion_layers
        self.drop_patches_after_fusion = config.drop_patches_after_fusion
        self.isolate_selection_tokens = config.selection_attention == "isolated"
        self.embeddings = E2CLIPVisionEmbeddings(vision_config)
        if self.num_selection_tokens > 0:
            self.selection_tokens = nn.Parameter(torch.empty(self.num_selection_tokens, vision_config.hidden_size))
        else:
            self.register_parameter("selection_tokens", None)
        self.pre_layrnorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.encoder = E2CLIPEncoder(vision_config)
        self.fusion_blocks = nn.ModuleList([E2CLIPFusionBlock(config) for _ in self.fusion_layers])
        self.post_layernorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)

    def _prepend_selection_tokens(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self.selection_tokens is None:
            return embeddings
        selection = self.selection_tokens.to(embeddings.dtype).expand(embeddings.shape[0], -1, -1)
        return torch.cat([selection, embeddings], dim=1)  # [batch, layout.length, width]

    def _attention_mask(self, sequence_length: int, device) -> torch.Tensor | None:
        """`[1, 1, seq, seq]` bool (True: may attend) for `selection_attention="isolated"`: selection
        tokens see only selection tokens; CLS and patches see everything. None for `"full"`."""
        if not self.isolate_selection_tokens or self.num_selection_tokens == 0:
            return None
        num_selection = self.layout.num_selection_tokens
        allowed = torch.ones(sequence_length, sequence_length, dtype=torch.bool, device=device)
        allowed[:num_selection, num_selection:] = False
        return allowed[None, None]

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> E2CLIPVisionOutput:
        hidden_states = self._prepend_selection_tokens(self.embeddings(pixel_values))
        hidden_states = self.pre_layrnorm(hidden_states)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        tower_outputs = {"all_hidden_states": all_hidden_states, "all_attentions": all_attentions}

        selection_indices = []
        start = 0
        mask = self._attention_mask(hidden_states.shape[1], hidden_states.device)
        for fusion_layer, fusion_block in zip(self.fusion_layers, self.fusion_blocks):
            hidden_states = self.encoder(hidden_states, mask, start=start, end=fusion_layer + 1, **tower_outputs)
            hidden_states, chosen = fusion_block(hidden_states)
            selection_indices.append(chosen)
            start = fusion_layer + 1
        if self.fusion_layers and self.drop_patches_after_fusion:
            hidden_states = self.layout.prefix(hidden_states)  # [batch, num_prefix_tokens, width]
            mask = self._attention_mask(hidden_states.shape[1], hidden_states.device)
        hidden_states = self.encoder(hidden_states, mask, start=start, **tower_outputs)

        pooled_output = self.post_layernorm(self.layout.cls(hidden_states))
        return E2CLIPVisionOutput(
            last_hidden_state=hidden_states,
            pooler_output=pooled_output,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            selection_indices=torch.stack(selection_indices, dim=1) if selection_indices else None,
        )


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
class E2CLIPPreTrainedModel(PreTrainedModel):
    config_class = E2CLIPConfig
    config: E2CLIPConfig
    base_model_prefix = "e2clip"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["E2CLIPEncoderLayer", "E2CLIPTextEmbeddings", "E2CLIPVisionEmbeddings"]

    def _initialize_weights(self, module: nn.Module, *args: Any, **kwargs: Any) -> None:
        """Runs `_init_weights` once per module, container modules included.

        transformers skips remote-code modules that own no parameter directly (their children's
        weights would then keep PyTorch's defaults). `_init_weights` below only uses `nn.init`,
        which transformers guards per parameter, so loaded weights are never overwritten.
        """
        if getattr(module, "_is_hf_initialized", False):
            return
        self._init_weights(module)
        module._is_hf_initialized = True

    def _init_weights(self, module: nn.Module) -> None:
        """CLIP's initialisation for the backbone; E2's additions as the reference (std width^-0.5)."""
        # a tower module's factor is its own config's (text_config / vision_config), the rest the model's
        factor = getattr(getattr(module, "config", None), "initializer_factor", self.config.initializer_factor)
        if isinstance(module, E2CLIPTextEmbeddings):
            nn.init.normal_(module.token_embedding.weight, std=0.02 * factor)
            nn.init.normal_(module.position_embedding.weight, std=0.02 * factor)
        elif isinstance(module, E2CLIPVisionEmbeddings):
            nn.init.normal_(module.class_embedding, std=module.embed_dim**-0.5 * factor)
            nn.init.normal_(module.patch_embedding.weight, std=module.config.initializer_range * factor)
            nn.init.normal_(module.position_embedding.weight, std=module.config.initializer_range * factor)
        elif isinstance(module, E2CLIPAttention):
            in_std = module.embed_dim**-0.5 * (2 * module.config.num_hidden_layers) ** -0.5 * factor
            for projection, std in ((module.q_proj, in_std), (module.k_proj, in_std), (module.v_proj, in_std)):
                nn.init.normal_(projection.weight, std=std)
            nn.init.normal_(module.out_proj.weight, std=module.embed_dim**-0.5 * factor)
            for projection in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
                nn.init.zeros_(projection.bias)
        elif isinstance(module, E2CLIPMLP):
            width, num_layers = module.config.hidden_size, module.config.num_hidden_layers
            nn.init.normal_(module.fc1.weight, std=(2 * width) ** -0.5 * factor)
            nn.init.normal_(module.fc2.weight, std=width**-0.5 * (2 * num_layers) ** -0.5 * factor)
            nn.init.zeros_(module.fc1.bias)
            nn.init.zeros_(module.fc2.bias)
        elif isinstance(module, E2CLIPVisionTransformer) and module.selection_tokens is not None:
            nn.init.normal_(module.selection_tokens, std=module.config.hidden_size**-0.5 * factor)
        elif isinstance(module, E2CLIPFusionBlock):
            width = module.q_proj.in_features
            for projection in (module.q_proj, module.k_proj, module.v_proj):
                nn.init.normal_(projection.weight, std=width**-0.5 * factor)
        elif isinstance(module, E2CLIPRegionHead):
            for projection in module.projections:
                nn.init.normal_(projection.weight, std=projection.in_features**-0.5 * factor)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, E2CLIPModel):
            nn.init.normal_(module.text_projection.weight, std=module.text_projection.in_features**-0.5 * factor)
            nn.init.normal_(module.visual_projection.weight, std=module.visual_projection.in_features**-0.5 * factor)
            nn.init.constant_(module.logit_scale, self.config.logit_scale_init_value)


class E2CLIPModel(E2CLIPPreTrainedModel):
    """E2: CLIP's two towers, selection tokens and fusion blocks in the image tower, and one
    regional embedding per tag entity, trained with the global and the region contrastive losses.
    """

    def __init__(self, config: E2CLIPConfig):
        config.check_e2_fields()
        super().__init__(config)
        for tower_config in (config.text_config, config.vision_config):  # unless chosen per tower
            if tower_config._attn_implementation is None:
                tower_config._attn_implementation = config._attn_implementation
        self.projection_dim = config.projection_dim
        self.text_model = E2CLIPTextTransformer(config.text_config)
        self.vision_model = E2CLIPVisionTransformer(config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.region_head = E2CLIPRegionHead(config) if config.num_entities else None
        # the training loss of forward(return_loss=True); no parameters. The trainers set
        # `contrastive_loss.gather_across_ranks = True` to take negatives from every process.
        self.contrastive_loss = E2CLIPLoss.from_config(config)
        self.post_init()

    # ----------------------------------------------------------------- new parameters
    def e2_parameter_names(self) -> list[str]:
        """Names of the parameters E2 adds to CLIP (all but CLIP's own)."""
        prefixes = ("vision_model.selection_tokens", "vision_model.fusion_blocks.", "region_head.")
        return [name for name, _ in self.named_parameters() if name.startswith(prefixes)]

    def no_weight_decay(self) -> set[str]:
        """Parameters to train without weight decay: norms, biases, embeddings-like tokens, logit scale."""
        names = set()
        for name, parameter in self.named_parameters():
            if parameter.ndim < 2 or name.endswith(("selection_tokens", "class_embedding")):
                names.add(name)
        return names

    # ----------------------------------------------------------------- towers
    def _text_embeds(self, input_ids, attention_mask=None, output_hidden_states=False, output_attentions=False,
                     position_ids=None):  # fmt: skip
        text_outputs = self.text_model(input_ids, attention_mask, position_ids, output_hidden_states, output_attentions)
        return self.text_projection(text_outputs.pooler_output), text_outputs

    def _image_embeds(self, pixel_values, output_hidden_states=False, output_attentions=False):
        vision_outputs = self.vision_model(pixel_values, output_hidden_states, output_attentions)
        return self.visual_projection(vision_outputs.pooler_output), vision_outputs

    def _region_embeds(self, vision_outputs: E2CLIPVisionOutput) -> torch.Tensor | None:
        if self.region_head is None:
            return None
        selection_states = self.config.token_layout.selection(vision_outputs.last_hidden_state)
        return self.region_head(selection_states)  # [batch, num_entities, projection_dim]

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> torch.Tensor | BaseModelOutputWithPooling | tuple:
        """Projected text embeddings `[batch, projection_dim]`, as `CLIPModel.get_text_features` of the
        installed transformers gives them: the tensor on 4.x; on 5.x the text tower's output with the
        projected embeddings as `pooler_output` (and `hidden_states` / `attentions` when asked),
        a tuple with `return_dict=False`."""
        tower_outputs = self._tower_output_flags(output_hidden_states, output_attentions)
        text_embeds, text_outputs = self._text_embeds(input_ids, attention_mask, *tower_outputs, position_ids)
        return self._features_output(text_embeds, text_outputs, return_dict)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> torch.Tensor | BaseModelOutputWithPooling | tuple:
        """Projected global image embeddings `[batch, projection_dim]` (same convention as
        `get_text_features`)."""
        tower_outputs = self._tower_output_flags(output_hidden_states, output_attentions)
        image_embeds, vision_outputs = self._image_embeds(pixel_values, *tower_outputs)
        return self._features_output(image_embeds, vision_outputs, return_dict)

    def _tower_output_flags(self, output_hidden_states: bool | None, output_attentions: bool | None):
        """`(output_hidden_states, output_attentions)`: the call's values, else the config's."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        return bool(output_hidden_states), bool(output_attentions)

    def _features_output(self, embeds: torch.Tensor, tower_outputs, return_dict: bool | None):
        if not FEATURES_AS_MODEL_OUTPUT:
            return embeds
        output = BaseModelOutputWithPooling(
            last_hidden_state=tower_outputs.last_hidden_state,
            pooler_output=embeds,
            hidden_states=tower_outputs.hidden_states,
            attentions=tower_outputs.attentions,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def get_region_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Regional embeddings `[batch, num_entities, projection_dim]`, in `config.entities` order."""
        if self.region_head is None:
            raise ValueError("This model has no entities (config.entities is empty), hence no region features.")
        _, vision_outputs = self._image_embeds(pixel_values)
        return self._region_embeds(vision_outputs)

    def encode_tags(
        self, tag_input_ids: torch.Tensor, tag_attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings of the tags, each distinct tag text encoded once.

        Args:
            tag_input_ids / tag_attention_mask: `[batch, num_entities, tag_length]`; a tag whose
                mask is all zero is missing.

        Returns:
            tag_embeds `[batch, num_entities, projection_dim]` (unnormalised, zeros where
            missing) and tag_groups `[batch, num_entities]`: a non-negative hash of the tag's
            tokens, equal for equal tag texts on every process (so groups stay comparable after
            gathering across ranks), -1 where missing.
        """
        batch_size, num_entities, _ = tag_input_ids.shape
        token_ids = tag_input_ids.reshape(batch_size * num_entities, -1)
        mask = tag_attention_mask.reshape(batch_size * num_entities, -1).bool()
        present = mask.any(dim=-1)  # [batch * entities]
        tag_groups = torch.full_like(present, -1, dtype=torch.long)
        tag_embeds = self.text_projection.weight.new_zeros(batch_size * num_entities, self.config.projection_dim)
        if not bool(present.any()):
            return tag_embeds.view(batch_size, num_entities, -1), tag_groups.view(batch_size, num_entities)
        columns = mask.any(dim=0)  # pad only to the longest tag of the batch
        token_ids, mask = token_ids[:, columns], mask[:, columns]

        keys = token_ids.masked_fill(~mask, -1)[present]  # padding-independent identity of a tag
        unique_keys, groups = torch.unique(keys, dim=0, return_inverse=True)
        unique_mask = unique_keys != -1
        unique_ids = unique_keys.masked_fill(~unique_mask, self.config.text_config.pad_token_id or 0)
        unique_embeds, _ = self._text_embeds(unique_ids, unique_mask.long())  # [num_unique, dim]

        tag_embeds = tag_embeds.to(unique_embeds.dtype)
        tag_embeds[present] = unique_embeds[groups]
        tag_groups[present] = _token_hash(unique_keys)[groups]
        return tag_embeds.view(batch_size, num_entities, -1), tag_groups.view(batch_size, num_entities)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        tag_input_ids: torch.LongTensor | None = None,
        tag_attention_mask: torch.Tensor | None = None,
    ) -> E2CLIPOutput | tuple:
        """Embeds whatever is given (texts, images or both); with `return_loss=True`, texts and
        images of the same items, and optionally their tags, also computes the losses.

        The arguments up to `return_dict` are `CLIPModel.forward`'s, in its order, so E2 is a
        positional drop-in for CLIP (`model(input_ids, pixel_values)`); E2's tags come last.

        Args:
            input_ids / attention_mask / position_ids: `[batch, seq]` product texts.
            pixel_values: `[batch, 3, image_size, image_size]`.
            return_loss: compute `loss`, `global_loss` and `region_loss`.
            output_attentions / output_hidden_states: each layer's attention probabilities / output
                in `text_model_output` and `vision_model_output` (default: the config's setting).
            interpolate_pos_encoding: not supported (the selection tokens' patch grid is fixed); only
                `False` is accepted.
            tag_input_ids / tag_attention_mask: `[batch, num_entities, tag_length]`, entities in
                `config.entities` order; an all-zero mask row marks a missing tag.

        With tags, the output also holds `tag_embeds` and `tag_groups` (see
        `encode_tags`), so a training loop can compute the losses over several processes.
        """
        if input_ids is None and pixel_values is None:
            raise ValueError("E2CLIPModel needs input_ids, pixel_values or both.")
        if interpolate_pos_encoding:
            raise ValueError(
                "E2CLIPModel does not interpolate position encodings: use the image size it was built for."
            )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        tower_outputs = self._tower_output_flags(output_hidden_states, output_attentions)
        text_embeds = text_outputs = image_embeds = vision_outputs = region_embeds = None
        if input_ids is not None:
            text_embeds, text_outputs = self._text_embeds(input_ids, attention_mask, *tower_outputs, position_ids)
        if pixel_values is not None:
            image_embeds, vision_outputs = self._image_embeds(pixel_values, *tower_outputs)
            region_embeds = self._region_embeds(vision_outputs)
        tag_embeds = tag_groups = None
        if tag_input_ids is not None and region_embeds is not None:
            self._check_tags(tag_input_ids, tag_attention_mask, region_embeds.shape[0])
            tag_embeds, tag_groups = self.encode_tags(tag_input_ids, tag_attention_mask)

        text_embeds, image_embeds, region_embeds, tag_embeds = (
            F.normalize(embeds, dim=-1) if embeds is not None else None
            for embeds in (text_embeds, image_embeds, region_embeds, tag_embeds)
        )
        logits_per_image = logits_per_text = None
        logit_scale = self.logit_scale.exp()
        if text_embeds is not None and image_embeds is not None:
            logits_per_text = logit_scale * text_embeds @ image_embeds.t()  # [text batch, image batch]
            logits_per_image = logits_per_text.t()

        loss = global_loss = region_loss = None
        if return_loss:
            self._check_loss_inputs(logits_per_text)
            loss, global_loss, region_loss = self.contrastive_loss(
                text_embeds, image_embeds, region_embeds, tag_embeds, tag_groups, logit_scale
            )

        output = E2CLIPOutput(
            loss=loss,
            global_loss=global_loss,
            region_loss=region_loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            region_embeds=region_embeds,
            tag_embeds=tag_embeds,
            tag_groups=tag_groups,
            selection_indices=vision_outputs.selection_indices if vision_outputs is not None else None,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _check_loss_inputs(logits_per_text) -> None:
        if logits_per_text is None:
            raise ValueError("return_loss=True needs both input_ids and pixel_values.")
        if logits_per_text.shape[0] != logits_per_text.shape[1]:
            raise ValueError(
                f"return_loss=True needs one text per image; got {logits_per_text.shape[0]} texts "
                f"and {logits_per_text.shape[1]} images."
            )

    def _check_tags(self, tag_input_ids, tag_attention_mask, batch_size) -> None:
        expected = (batch_size, self.config.num_entities)
        if tag_attention_mask is None:
            raise ValueError("tag_input_ids needs tag_attention_mask (all-zero rows mark missing tags).")
        if tag_input_ids.ndim != 3 or tuple(tag_input_ids.shape[:2]) != expected:
            raise ValueError(
                f"tag_input_ids must be [batch, num_entities, tag_length] = [{expected[0]}, {expected[1]}, L] "
                f"for entities {self.config.entities}; got {list(tag_input_ids.shape)}."
            )
        if tag_attention_mask.shape != tag_input_ids.shape:
            raise ValueError(
                f"tag_attention_mask {list(tag_attention_mask.shape)} must match tag_input_ids "
                f"{list(tag_input_ids.shape)}."
            )

    # ----------------------------------------------------------------- saving
    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' saving, plus the files a deployment reads (see `write_deployment_files`).

        When the class is registered for an Auto class (importing `e2_hf.modeling`, or loading the
        folder as remote code, registers it), transformers copies the code files and writes that
        class's `auto_map` entry; the entry of the other Auto class that loads this model is added
        here, so that both `AutoModel` and the zero-shot image classification pipeline load the folder.
        """
        if self._auto_class is not None:
            class_path = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            auto_map = getattr(self.config, "auto_map", None) or {}
            self.config.auto_map = {**auto_map, **dict.fromkeys(MODEL_AUTO_CLASSES, class_path)}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        write_deployment_files(save_directory)
        return result


# the Auto classes that load an E2 model
MODEL_AUTO_CLASSES = ("AutoModel", "AutoModelForZeroShotImageClassification")


def _token_hash(keys: torch.Tensor) -> torch.Tensor:
    """`[rows, length]` token ids (-1 = padding) -> `[rows]` non-negative int64 ids, equal for
    equal rows: two 31-bit polynomial hashes side by side."""
    modulus = 2_147_483_647  # 2**31 - 1
    first = torch.zeros(keys.shape[0], dtype=torch.long, device=keys.device)
    second = torch.zeros_like(first)
    for column in keys.t():
        first = (first * 1_000_003 + column + 2) % modulus
        second = (second * 998_244_353 + column + 2) % modulus
    return first * modulus + second


__all__ = [
    "E2CLIPModel",
    "E2CLIPOutput",
    "E2CLIPPreTrainedModel",
    "E2CLIPVisionOutput",
]
