import math

import pytest

from e2_hf import E2CLIPConfig


def test_defaults_are_the_papers_vit_b32():
    config = E2CLIPConfig()
    vision = config.vision_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == (224, 32, 768, 12)
    assert vision.num_patches == 49
    assert config.text_config.hidden_size == 512 and config.projection_dim == 512
    assert config.entities == ["brand", "season", "subcategory", "composition"]
    assert config.tokens_per_entity == [2, 2, 2, 2] and config.num_selection_tokens == 8
    assert config.fusion_layers == [7, 10] and config.drop_patches_after_fusion
    assert config.entity_token_slices == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert (config.global_loss_weight, config.region_loss_weight, config.region_loss) == (0.5, 0.5, "clip")
    assert math.isclose(config.selection_scale, 768**-0.5)


def test_round_trip(tmp_path):
    config = E2CLIPConfig(
        entities=["brand", "fabric"],
        tokens_per_entity=[3, 1],
        fusion_layers=[3, 9],
        region_loss="multi_positive",
        gumbel_tau=0.5,
    )
    config.save_pretrained(tmp_path)
    loaded = E2CLIPConfig.from_pretrained(tmp_path)
    for field in ("entities", "tokens_per_entity", "fusion_layers", "region_loss", "gumbel_tau", "selection_scale"):
        assert getattr(loaded, field) == getattr(config, field)
    assert loaded.vision_config.hidden_size == 768 and loaded.text_config.vocab_size == 49408


def test_no_entities_means_no_fusion():
    config = E2CLIPConfig(entities=[])
    assert config.num_selection_tokens == 0 and config.active_fusion_layers == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"entities": ["brand", "brand"]}, "unique"),
        ({"entities": ["brand", ""]}, "non-empty"),
        ({"tokens_per_entity": [2, 2]}, "tokens_per_entity has 2 counts for 4 entities"),
        ({"tokens_per_entity": 0}, "positive integers"),
        ({"fusion_layers": [10, 7]}, "strictly increasing"),
        ({"fusion_layers": [12]}, "below 12"),
        ({"fusion_layers": [], "selection_attention": "isolated"}, "needs at least one fusion layer"),
        ({"gumbel_tau": 0.0}, "gumbel_tau"),
        ({"region_loss": "focal"}, "region_loss must be one of"),
        ({"global_loss_weight": -1.0}, "non-negative"),
        ({"vision_config": {"hidden_size": 30, "num_attention_heads": 4}}, "not a multiple"),
        ({"vision_config": {"image_size": 100, "patch_size": 32}}, "multiple of patch_size"),
    ],
)
def test_invalid_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        E2CLIPConfig(**overrides)
