import copy

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers.modeling_layers import GradientCheckpointingLayer

from e2_hf import E2CLIPConfig, E2CLIPModel
from e2_hf.compat import projected_features
from e2_hf.modeling.loss_e2clip import region_contrastive_loss, symmetric_contrastive_loss

from .conftest import E2CLIPModelTester

# Per item: brand, season, subcategory, composition as token id lists (None = missing).
TAGS = [
    [[11, 12], [20], [30, 31, 32], [40]],
    [[13], [20], [33], None],
    [[11, 12], [21], [30, 31, 32], [41, 42]],
    [[14], None, [34], [40]],
]


features = projected_features  # transformers 5.x wraps `get_*_features` in a model output; 4.x does not


def forward_with_loss(model, tester, tags=TAGS, tag_tensors=None, **kwargs):
    """Texts, images and tags of `tester`; `tag_tensors` (ids, mask) replace `tags` when given."""
    input_ids, attention_mask = tester.input_ids()
    tag_input_ids, tag_attention_mask = tag_tensors if tag_tensors is not None else tester.tags(tags)
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values=tester.pixel_values(),
        tag_input_ids=tag_input_ids,
        tag_attention_mask=tag_attention_mask,
        return_loss=True,
        **kwargs,
    )


def test_output_shapes(tiny_model, tester):
    config = tiny_model.config
    outputs = forward_with_loss(tiny_model, tester, output_hidden_states=True)
    batch, dim = tester.batch_size, config.projection_dim
    assert outputs.logits_per_image.shape == outputs.logits_per_text.shape == (batch, batch)
    assert outputs.text_embeds.shape == outputs.image_embeds.shape == (batch, dim)
    assert outputs.region_embeds.shape == (batch, config.num_entities, dim)
    assert outputs.selection_indices.shape == (batch, len(config.fusion_layers), config.num_selection_tokens)
    num_patches = config.vision_config.num_patches
    assert int(outputs.selection_indices.min()) >= 0 and int(outputs.selection_indices.max()) < num_patches
    # patches are dropped after the last fusion: [selection tokens, CLS]
    vision = outputs.vision_model_output
    assert vision.last_hidden_state.shape == (batch, config.num_selection_tokens + 1, 32)
    assert len(vision.hidden_states) == config.vision_config.num_hidden_layers + 1
    assert vision.hidden_states[0].shape[1] == config.num_selection_tokens + 1 + num_patches
    for name in ("loss", "global_loss", "region_loss"):
        assert outputs[name].ndim == 0 and torch.isfinite(outputs[name])
    expected = config.global_loss_weight * outputs.global_loss + config.region_loss_weight * outputs.region_loss
    torch.testing.assert_close(outputs.loss, expected)


def test_keeping_patches_after_the_last_fusion(tester):
    tester.config_kwargs["drop_patches_after_fusion"] = False
    model = E2CLIPModel(tester.get_config()).eval()
    outputs = model(pixel_values=tester.pixel_values())
    assert outputs.vision_model_output.last_hidden_state.shape[1] == 8 + 1 + 16


def test_selection_tokens_without_fusion_blocks_are_pooled_prefix_tokens(tester):
    """The paper's "without fusion blocks" ablation: no patch is chosen or dropped, the tokens still
    give every entity a regional embedding, the region loss trains them, and the tokens differ."""
    tester.config_kwargs["fusion_layers"] = []
    torch.manual_seed(0)
    model = E2CLIPModel(tester.get_config()).train()
    assert len(model.vision_model.fusion_blocks) == 0
    outputs = forward_with_loss(model, tester, output_hidden_states=True)
    config = model.config
    assert outputs.selection_indices is None
    assert outputs.region_embeds.shape == (tester.batch_size, config.num_entities, config.projection_dim)
    num_patches = config.vision_config.num_patches
    assert outputs.vision_model_output.last_hidden_state.shape[1] == config.num_selection_tokens + 1 + num_patches
    assert torch.isfinite(outputs.region_loss)
    outputs.loss.backward()
    assert model.vision_model.selection_tokens.grad.abs().sum() > 0
    assert not torch.allclose(outputs.region_embeds[:, 0], outputs.region_embeds[:, 1])


def test_image_only_and_text_only_calls(tiny_model, tester):
    image_only = tiny_model(pixel_values=tester.pixel_values())
    assert image_only.text_embeds is None and image_only.logits_per_image is None
    assert image_only.image_embeds is not None and image_only.region_embeds is not None
    input_ids, attention_mask = tester.input_ids()
    text_only = tiny_model(input_ids=input_ids, attention_mask=attention_mask)
    assert text_only.image_embeds is None and text_only.text_embeds.shape == (4, 16)
    # the first field of an image-only call is the image embedding (image-feature-extraction reads [0])
    assert image_only.to_tuple()[0] is image_only.image_embeds


def test_feature_getters_match_forward(tiny_model, tester):
    input_ids, attention_mask = tester.input_ids()
    pixel_values = tester.pixel_values()
    with torch.no_grad():
        outputs = tiny_model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        image_features = tiny_model.get_image_features(pixel_values)
        text_features = tiny_model.get_text_features(input_ids, attention_mask)
        region_features = tiny_model.get_region_features(pixel_values)
    major = int(transformers.__version__.split(".")[0])
    assert isinstance(image_features, torch.Tensor) == (major < 5)
    torch.testing.assert_close(F.normalize(features(image_features), dim=-1), outputs.image_embeds)
    torch.testing.assert_close(F.normalize(features(text_features), dim=-1), outputs.text_embeds)
    torch.testing.assert_close(F.normalize(region_features, dim=-1), outputs.region_embeds)
    torch.testing.assert_close(outputs.region_embeds.norm(dim=-1), torch.ones(4, 4))


def test_feature_getters_take_clips_arguments_and_return_what_clip_returns(tiny_model, tester):
    input_ids, attention_mask = tester.input_ids()
    pixel_values = tester.pixel_values()
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    config = tiny_model.config
    with torch.no_grad():
        default = features(tiny_model.get_text_features(input_ids, attention_mask))
        explicit = features(tiny_model.get_text_features(input_ids, attention_mask, positions))  # CLIP's order
        shifted = features(tiny_model.get_text_features(input_ids, attention_mask, positions.flip(-1)))
        text = tiny_model.get_text_features(input_ids, attention_mask, output_hidden_states=True,
                                            output_attentions=True)  # fmt: skip
        image = tiny_model.get_image_features(pixel_values, output_hidden_states=True, output_attentions=True)
        as_tuple = tiny_model.get_text_features(input_ids, attention_mask, return_dict=False)
    torch.testing.assert_close(explicit, default)
    assert not torch.allclose(shifted, default)  # the positions are used
    if int(transformers.__version__.split(".")[0]) < 5:  # CLIPModel 4.x returns the embeddings alone
        assert isinstance(text, torch.Tensor) and isinstance(as_tuple, torch.Tensor)
        return
    assert len(text.hidden_states) == config.text_config.num_hidden_layers + 1
    assert len(text.attentions) == config.text_config.num_hidden_layers
    assert len(image.attentions) == config.vision_config.num_hidden_layers
    assert image.hidden_states[0].shape[1] == config.token_layout.length
    assert isinstance(as_tuple, tuple)  # (last_hidden_state, pooler_output)
    torch.testing.assert_close(as_tuple[1], default)
    torch.testing.assert_close(text.pooler_output, default)


def test_every_parameter_receives_a_gradient(tester):
    torch.manual_seed(0)
    model = E2CLIPModel(tester.get_config()).train()
    forward_with_loss(model, tester).loss.backward()
    no_gradient = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert no_gradient == []
    for name in model.e2_parameter_names() + ["logit_scale"]:
        gradient = dict(model.named_parameters())[name].grad
        assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0, name


def test_eval_is_deterministic_and_batch_independent(tiny_model, tester):
    pixel_values = tester.pixel_values()
    with torch.no_grad():
        first = tiny_model(pixel_values=pixel_values)
        second = tiny_model(pixel_values=pixel_values)
        alone = tiny_model(pixel_values=pixel_values[1:2])
    torch.testing.assert_close(first.image_embeds, second.image_embeds, rtol=0, atol=0)
    assert torch.equal(first.selection_indices, second.selection_indices)
    torch.testing.assert_close(alone.region_embeds[0], first.region_embeds[1], rtol=1e-5, atol=1e-5)
    assert torch.equal(alone.selection_indices[0], first.selection_indices[1])


def test_training_samples_the_selection(tester):
    model = E2CLIPModel(tester.get_config()).train()
    pixel_values = tester.pixel_values()
    choices = set()
    for seed in range(5):
        torch.manual_seed(seed)
        choices.add(tuple(model(pixel_values=pixel_values).selection_indices.flatten().tolist()))
    assert len(choices) > 1  # Gumbel noise changes the choice; eval (argmax) never does


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tester):
    torch.manual_seed(0)
    model = E2CLIPModel(tester.get_config()).train()
    torch.manual_seed(3)
    plain = forward_with_loss(model, tester).loss
    plain.backward()
    plain_grads = [parameter.grad.clone() for parameter in model.parameters()]
    model.zero_grad()
    # transformers 5.x renamed gradient_checkpointing_enable to activation_checkpointing_enable
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    layers = [*model.vision_model.encoder.layers, *model.text_model.encoder.layers]
    assert all(isinstance(layer, GradientCheckpointingLayer) and layer.gradient_checkpointing for layer in layers)
    runs = []
    # a pre-hook on the layer's first module: a recompute may stop early, once what backward needs is back
    model.vision_model.encoder.layers[0].layer_norm1.register_forward_pre_hook(lambda *_: runs.append(1))
    torch.manual_seed(3)
    checkpointed = forward_with_loss(model, tester).loss
    ran_forward = len(runs)
    checkpointed.backward()
    assert len(runs) > ran_forward  # the layer ran again in the backward pass: it was recomputed
    checkpointed_grads = [parameter.grad for parameter in model.parameters()]
    torch.testing.assert_close(checkpointed, plain)
    for expected, actual in zip(plain_grads, checkpointed_grads):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def _tag_embeds_one_by_one(model, tag_input_ids, tag_attention_mask):
    """Each tag encoded on its own, unpadded, with no deduplication."""
    batch, entities, _ = tag_input_ids.shape
    embeds = torch.zeros(batch, entities, model.config.projection_dim)
    for row in range(batch):
        for entity in range(entities):
            mask = tag_attention_mask[row, entity].bool()
            if mask.any():
                ids = tag_input_ids[row, entity][mask][None]
                embeds[row, entity] = features(model.get_text_features(ids))[0]
    return embeds, tag_attention_mask.any(-1)


def test_region_loss_with_deduplicated_tags_equals_loss_without(tiny_model, tester):
    tag_input_ids, tag_attention_mask = tester.tags(TAGS)
    # pad far beyond the longest tag: the model must trim it
    tag_input_ids = F.pad(tag_input_ids, (0, 9))
    tag_attention_mask = F.pad(tag_attention_mask, (0, 9))
    encoded_shapes = []
    hook = tiny_model.text_model.register_forward_hook(lambda module, args, out: encoded_shapes.append(args[0].shape))
    with torch.no_grad():
        outputs = forward_with_loss(tiny_model, tester, tag_tensors=(tag_input_ids, tag_attention_mask))
        tag_embeds, present = _tag_embeds_one_by_one(tiny_model, tag_input_ids, tag_attention_mask)
    hook.remove()
    expected = region_contrastive_loss(outputs.region_embeds, tag_embeds, present, tiny_model.logit_scale.exp())
    torch.testing.assert_close(outputs.region_loss, expected, rtol=1e-5, atol=1e-6)
    distinct_tags = {tuple(tag) for item in TAGS for tag in item if tag}
    longest_tag = 2 + max(len(tag) for tag in distinct_tags)
    assert encoded_shapes[1] == (len(distinct_tags), longest_tag)  # [0] is the product text


def test_missing_tags_are_left_out(tiny_model, tester):
    tag_input_ids, tag_attention_mask = tester.tags(TAGS)
    garbage = tag_input_ids.clone()
    garbage[1, 3] = 7  # item 1 has no composition: its ids must not matter
    with torch.no_grad():
        outputs = forward_with_loss(tiny_model, tester)
        garbage_outputs = forward_with_loss(tiny_model, tester, tag_tensors=(garbage, tag_attention_mask))
        # only entity "composition" (3) with its present items (0, 2, 3), by hand
        tag_embeds, present = _tag_embeds_one_by_one(tiny_model, tag_input_ids, tag_attention_mask)
        kept = torch.tensor([0, 2, 3])
        region = F.normalize(outputs.region_embeds[kept, 3], dim=-1)
        tags = F.normalize(tag_embeds[kept, 3], dim=-1)
        composition_loss = symmetric_contrastive_loss(tiny_model.logit_scale.exp() * tags @ region.t())
        per_entity = [
            region_contrastive_loss(
                outputs.region_embeds[:, [e]], tag_embeds[:, [e]], present[:, [e]], tiny_model.logit_scale.exp()
            )
            for e in range(4)
        ]
    torch.testing.assert_close(garbage_outputs.region_loss, outputs.region_loss)
    torch.testing.assert_close(per_entity[3], composition_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outputs.region_loss, torch.stack(per_entity).mean(), rtol=1e-5, atol=1e-6)


def test_entities_without_any_tag_give_no_region_loss(tiny_model, tester):
    no_tags = [[None] * 4 for _ in range(4)]
    no_tags[0][0] = [11]
    tag_input_ids, tag_attention_mask = tester.tags(no_tags)
    tag_attention_mask[0, 0] = 0
    outputs = tiny_model(
        input_ids=tester.input_ids()[0],
        pixel_values=tester.pixel_values(),
        tag_input_ids=tag_input_ids,
        tag_attention_mask=tag_attention_mask,
        return_loss=True,
    )
    assert outputs.region_loss is None
    torch.testing.assert_close(outputs.loss, outputs.global_loss)


def test_multi_positive_treats_equal_tags_as_positives(tester):
    torch.manual_seed(0)
    clip_model = E2CLIPModel(tester.get_config()).eval()
    tester.config_kwargs["region_loss"] = "multi_positive"
    multi_model = E2CLIPModel(tester.get_config()).eval()
    multi_model.load_state_dict(clip_model.state_dict())
    with torch.no_grad():
        clip_outputs = forward_with_loss(clip_model, tester)
        multi_outputs = forward_with_loss(multi_model, tester)
        tag_embeds, present = _tag_embeds_one_by_one(clip_model, *tester.tags(TAGS))
    assert not torch.isclose(clip_outputs.region_loss, multi_outputs.region_loss)

    # brand: items 0 and 2 share "11 12": one class for image -> tag, two positives for tag -> image
    scale = clip_model.logit_scale.exp()
    region = F.normalize(multi_outputs.region_embeds[:, 0], dim=-1)
    tags = F.normalize(tag_embeds[:, 0], dim=-1)
    logits = scale * region @ tags.t()  # [image, tag of item]
    distinct = logits[:, [0, 1, 3]]  # tags "11 12", "13", "14"
    image_loss = F.cross_entropy(distinct, torch.tensor([0, 1, 0, 2]))
    log_probs = distinct.t().log_softmax(dim=1)  # [tag, image]
    tag_loss = -(log_probs[0, [0, 2]].mean() + log_probs[1, 1] + log_probs[2, 3]) / 3
    groups = torch.tensor([[7], [5], [7], [9]])
    brand_loss = region_contrastive_loss(
        multi_outputs.region_embeds[:, [0]], tag_embeds[:, [0]], present[:, [0]], scale, "multi_positive", groups
    )
    torch.testing.assert_close(brand_loss, (image_loss + tag_loss) / 2, rtol=1e-5, atol=1e-6)

    # with all tags distinct the two variants agree
    distinct = [[[50 + 4 * row + entity] for entity in range(4)] for row in range(4)]
    with torch.no_grad():
        clip_distinct = forward_with_loss(clip_model, tester, tags=distinct).region_loss
        multi_distinct = forward_with_loss(multi_model, tester, tags=distinct).region_loss
    torch.testing.assert_close(clip_distinct, multi_distinct)


def test_no_entities_is_plain_clip(tester):
    tester.config_kwargs.update(entities=[], tokens_per_entity=[])
    model = E2CLIPModel(tester.get_config()).eval()
    assert model.e2_parameter_names() == [] and model.region_head is None
    outputs = model(pixel_values=tester.pixel_values())
    assert outputs.region_embeds is None and outputs.selection_indices is None
    with pytest.raises(ValueError, match="no entities"):
        model.get_region_features(tester.pixel_values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs input_ids, pixel_values or both"),
        ({"pixel_values": "images", "return_loss": True}, "needs both input_ids and pixel_values"),
        ({"texts": 3, "return_loss": True}, "one text per image"),
        ({"tags": (4, 3), "return_loss": True}, r"num_entities, tag_length\] = \[4, 4, L\]"),
        ({"tags_without_mask": True, "return_loss": True}, "needs tag_attention_mask"),
        ({"long_text": True}, "context length is 16"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny_model, tester, kwargs, message):
    inputs = {}
    if kwargs.pop("pixel_values", None) or kwargs.get("return_loss"):
        inputs["pixel_values"] = tester.pixel_values()
    if "texts" in kwargs:
        inputs["input_ids"] = tester.input_ids(kwargs.pop("texts"))[0]
    elif (
        kwargs.get("return_loss")
        and "pixel_values" not in kwargs
        and "tags" in kwargs
        or kwargs.get("tags_without_mask")
    ):
        inputs["input_ids"] = tester.input_ids()[0]
    if "tags" in kwargs:
        batch, entities = kwargs.pop("tags")
        inputs["tag_input_ids"] = torch.ones(batch, entities, 3, dtype=torch.long)
        inputs["tag_attention_mask"] = torch.ones(batch, entities, 3, dtype=torch.long)
    if kwargs.pop("tags_without_mask", None):
        inputs["tag_input_ids"] = torch.ones(4, 4, 3, dtype=torch.long)
    if kwargs.pop("long_text", None):
        inputs["input_ids"] = torch.ones(2, 20, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        tiny_model(**inputs, **kwargs)


def test_no_weight_decay_names_norms_biases_tokens_and_scale(tiny_model):
    names = tiny_model.no_weight_decay()
    assert {"logit_scale", "vision_model.selection_tokens", "vision_model.embeddings.class_embedding"} <= names
    assert "region_head.layer_norms.0.weight" in names
    assert "vision_model.fusion_blocks.0.q_proj.weight" not in names
    assert "text_model.encoder.layers.0.self_attn.q_proj.bias" in names


def test_new_parameters_are_initialised_after_from_pretrained_of_a_plain_clip(tmp_path):
    plain = E2CLIPModelTester(entities=[], tokens_per_entity=[])
    clip_like = E2CLIPModel(plain.get_config())
    clip_like.save_pretrained(tmp_path)
    model = E2CLIPModel.from_pretrained(tmp_path, entities=["brand", "season"], tokens_per_entity=2)
    parameters = dict(model.named_parameters())
    new_names = set(model.e2_parameter_names())
    assert new_names >= {"vision_model.selection_tokens", "region_head.projections.1.weight"}
    for name in new_names:
        tensor = parameters[name]
        assert torch.isfinite(tensor).all() and tensor.abs().max() < 10, name  # not uninitialised memory
    for name in (
        "vision_model.selection_tokens",
        "vision_model.fusion_blocks.1.v_proj.weight",
        "region_head.projections.1.weight",
    ):
        width = parameters[name].shape[-1]
        assert 0.5 < parameters[name].std() * width**0.5 < 2, name  # std width**-0.5, as documented
    assert torch.equal(parameters["region_head.layer_norms.0.weight"], torch.ones(32))
    for name, tensor in clip_like.state_dict().items():  # CLIP's weights are loaded, not re-drawn
        assert torch.equal(model.state_dict()[name], tensor), name


def test_sdpa_attention_matches_the_explicit_formula(tiny_model):
    attention = tiny_model.vision_model.encoder.layers[0].self_attn
    hidden_states = torch.randn(2, 5, 32)
    with torch.no_grad():
        actual, no_weights = attention(hidden_states)
        explicit, returned_weights = attention(hidden_states, output_attentions=True)
        q, k, v = (
            attention._split_heads(p(hidden_states)) for p in (attention.q_proj, attention.k_proj, attention.v_proj)
        )
        weights = (q @ k.transpose(-1, -2) / attention.head_dim**0.5).softmax(-1)
        expected = attention.out_proj((weights @ v).transpose(1, 2).reshape(2, 5, 32))
    assert no_weights is None
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explicit, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(returned_weights, weights, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("choose", ["from_pretrained", "set_attn_implementation"])
def test_the_attention_implementation_asked_for_is_the_one_that_runs(tester, monkeypatch, tmp_path, choose):
    torch.manual_seed(0)
    config = tester.get_config()
    sdpa_model = E2CLIPModel(config).eval()
    if choose == "from_pretrained":
        sdpa_model.save_pretrained(tmp_path)
        eager_model = E2CLIPModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    else:
        eager_model = copy.deepcopy(sdpa_model)
        eager_model.set_attn_implementation("eager")
    configs = (eager_model.config, eager_model.config.text_config, eager_model.config.vision_config)
    assert all(config._attn_implementation == "eager" for config in configs)
    pixel_values = torch.rand(2, 3, config.vision_config.image_size, config.vision_config.image_size)
    input_ids = torch.randint(0, config.text_config.vocab_size - 1, (2, 6))
    with torch.no_grad():
        reference = sdpa_model(input_ids=input_ids, pixel_values=pixel_values)

    def no_sdpa(*args, **kwargs):
        raise AssertionError("scaled_dot_product_attention ran")

    monkeypatch.setattr(F, "scaled_dot_product_attention", no_sdpa)
    with torch.no_grad():
        eager = eager_model(input_ids=input_ids, pixel_values=pixel_values)  # runs without SDPA
        with pytest.raises(AssertionError, match="scaled_dot_product_attention ran"):
            sdpa_model(input_ids=input_ids, pixel_values=pixel_values)
    for name in ("image_embeds", "text_embeds", "region_embeds"):
        torch.testing.assert_close(getattr(eager, name), getattr(reference, name), rtol=1e-5, atol=1e-5)


def test_output_attentions_returns_each_layers_probabilities_and_changes_nothing_else(tester, tiny_model):
    input_ids, attention_mask = tester.input_ids()
    pixel_values = tester.pixel_values()
    with torch.no_grad():
        plain = tiny_model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        explicit = tiny_model(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, output_attentions=True
        )
    for key in ("text_embeds", "image_embeds", "region_embeds"):
        torch.testing.assert_close(explicit[key], plain[key], rtol=1e-5, atol=1e-6)
    assert torch.equal(explicit.selection_indices, plain.selection_indices)
    assert plain.vision_model_output.attentions is None

    config = tiny_model.config
    vision_attentions = explicit.vision_model_output.attentions
    assert len(vision_attentions) == config.vision_config.num_hidden_layers
    num_patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    full_length = config.num_selection_tokens + 1 + num_patches
    last_fusion = max(config.fusion_layers)
    for layer, weights in enumerate(vision_attentions):
        length = full_length if layer <= last_fusion else config.num_selection_tokens + 1  # patches dropped
        assert weights.shape == (tester.batch_size, config.vision_config.num_attention_heads, length, length)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))

    text_attentions = explicit.text_model_output.attentions
    assert len(text_attentions) == config.text_config.num_hidden_layers
    padded_keys = attention_mask == 0  # [batch, seq]: no real token attends to padding
    for weights in text_attentions:
        attended_padding = weights.sum(dim=1) * padded_keys[:, None, :]  # [batch, query, key]
        assert attended_padding[attention_mask.bool()].abs().max() == 0
        assert torch.all(weights.triu(diagonal=1) == 0)  # causal


def test_config_defaults_build_vit_b32_shapes():
    with torch.device("meta"):
        model = E2CLIPModel(E2CLIPConfig())
    assert model.vision_model.selection_tokens.shape == (8, 768)
    assert len(model.vision_model.fusion_blocks) == 2
    assert model.region_head.projections[3].weight.shape == (512, 768)


def test_isolated_selection_tokens_see_patches_only_through_their_choice(tester):
    torch.manual_seed(0)
    model = E2CLIPModel(E2CLIPConfig(**{**tester.config_kwargs, "selection_attention": "isolated"})).eval()
    pixels = tester.pixel_values(2)
    first_fusion = model.config.fusion_layers[0]
    num_selection = model.config.num_selection_tokens
    outputs = model.vision_model(pixels, output_hidden_states=True)
    before_fusion = outputs.hidden_states[first_fusion + 1][:, :num_selection]  # after layer `first_fusion`
    assert torch.allclose(before_fusion[0], before_fusion[1], atol=1e-6)  # the image has not reached them
    patches_and_cls = outputs.hidden_states[first_fusion + 1][:, num_selection:]
    assert not torch.allclose(patches_and_cls[0], patches_and_cls[1])

    full = E2CLIPModel(tester.get_config()).eval()
    full.load_state_dict(model.state_dict())
    hidden = full.vision_model(pixels, output_hidden_states=True).hidden_states[first_fusion + 1][:, :num_selection]
    assert not torch.allclose(hidden[0], hidden[1])  # the paper's full attention lets them see the image


def test_isolated_attention_weights_are_zero_from_selection_tokens_to_patches(tester):
    torch.manual_seed(0)
    model = E2CLIPModel(E2CLIPConfig(**{**tester.config_kwargs, "selection_attention": "isolated"})).eval()
    attentions = model.vision_model(tester.pixel_values(1), output_attentions=True).attentions
    num_selection = model.config.num_selection_tokens
    for weights in attentions:
        assert torch.all(weights[:, :, :num_selection, num_selection:] == 0)
        assert torch.allclose(weights.sum(dim=-1), torch.ones(()))
    with pytest.raises(ValueError, match="selection_attention must be one of"):
        E2CLIPConfig(**{**tester.config_kwargs, "selection_attention": "none"})


def test_forward_takes_clips_positional_order_and_config_output_flags(tiny_model, tester):
    """`model(input_ids, pixel_values, attention_mask)` as with CLIPModel; the config's
    output_hidden_states / output_attentions are the defaults of every call."""
    input_ids, attention_mask = tester.input_ids()
    pixel_values = tester.pixel_values()
    with torch.no_grad():
        by_name = tiny_model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        by_position = tiny_model(input_ids, pixel_values, attention_mask)
        position_ids = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        with_positions = tiny_model(input_ids, pixel_values, attention_mask, position_ids)
    for name in ("text_embeds", "image_embeds", "region_embeds", "logits_per_image"):
        torch.testing.assert_close(by_position[name], by_name[name], rtol=0, atol=0)
        torch.testing.assert_close(with_positions[name], by_name[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not interpolate"):
        tiny_model(pixel_values=pixel_values, interpolate_pos_encoding=True)
    config = E2CLIPConfig(**tester.config_kwargs, attn_implementation="eager")
    config.output_hidden_states = config.output_attentions = True  # transformers asks for eager with attentions
    model = E2CLIPModel(config).eval()
    with torch.no_grad():
        outputs = model(input_ids, pixel_values, attention_mask)
        quiet = model(input_ids, pixel_values, attention_mask, output_hidden_states=False, output_attentions=False)
    assert len(outputs.vision_model_output.hidden_states) == config.vision_config.num_hidden_layers + 1
    assert len(outputs.text_model_output.attentions) == config.text_config.num_hidden_layers
    assert quiet.vision_model_output.hidden_states is None and quiet.text_model_output.attentions is None


def test_initializer_factors_scale_their_own_parts(tester):
    kwargs = copy.deepcopy(tester.config_kwargs)
    kwargs["text_config"]["initializer_factor"] = 0.0
    torch.manual_seed(0)
    text_zero = E2CLIPModel(E2CLIPConfig(**kwargs))
    assert text_zero.text_model.encoder.layers[0].mlp.fc1.weight.abs().max() == 0
    assert text_zero.vision_model.encoder.layers[0].mlp.fc1.weight.abs().max() > 0
    assert text_zero.text_projection.weight.abs().max() > 0
    torch.manual_seed(0)
    model_zero = E2CLIPModel(E2CLIPConfig(**{**tester.config_kwargs, "initializer_factor": 0.0}))
    assert model_zero.text_projection.weight.abs().max() == 0 and model_zero.visual_projection.weight.abs().max() == 0
    assert model_zero.text_model.encoder.layers[0].mlp.fc1.weight.abs().max() > 0
