"""E2 against transformers' own CLIPModel, given the same weights."""

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from e2_hf import from_clip

from .conftest import E2CLIPModelTester
from .test_modeling import features


def tiny_clip(tmp_path, eos_token_id: int = 98) -> tuple[CLIPModel, str]:
    tester = E2CLIPModelTester()
    text = dict(tester.config_kwargs["text_config"], eos_token_id=eos_token_id)
    config = CLIPConfig(text_config=text, vision_config=tester.config_kwargs["vision_config"], projection_dim=16)
    torch.manual_seed(0)
    clip = CLIPModel(config).eval()
    with torch.no_grad():  # a trained-looking (non-trivial) logit scale and layer norms
        clip.logit_scale.fill_(3.0)
        clip.vision_model.post_layernorm.weight.uniform_(0.5, 1.5)
    clip.save_pretrained(tmp_path)
    return clip, str(tmp_path)


@pytest.mark.parametrize("eos_token_id", [98, 2], ids=["eos-token", "legacy-argmax"])
def test_plain_e2_equals_clip(tmp_path, tester, eos_token_id):
    clip, path = tiny_clip(tmp_path, eos_token_id)
    e2 = from_clip(path, entities=[]).eval()
    input_ids, attention_mask = tester.input_ids()
    pixel_values = tester.pixel_values()
    with torch.no_grad():
        expected = clip(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, return_loss=True)
        actual = e2(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, return_loss=True)
        expected_text = features(clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
        actual_text = features(e2.get_text_features(input_ids, attention_mask))
    torch.testing.assert_close(actual.text_embeds, expected.text_embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual.image_embeds, expected.image_embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual.logits_per_image, expected.logits_per_image, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual_text, expected_text, rtol=1e-5, atol=1e-5)


def test_e2_from_clip_keeps_clips_text_embeddings(tmp_path, tester):
    clip, path = tiny_clip(tmp_path)
    e2 = from_clip(path, entities=["brand", "season", "subcategory", "composition"], fusion_layers=[1, 2]).eval()
    input_ids, attention_mask = tester.input_ids()
    with torch.no_grad():
        expected = features(clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
        outputs = e2(input_ids=input_ids, attention_mask=attention_mask, pixel_values=tester.pixel_values())
    torch.testing.assert_close(outputs.text_embeds, F.normalize(expected, dim=-1), rtol=1e-5, atol=1e-5)
    assert outputs.region_embeds.shape == (4, 4, 16)


def test_from_clip_initialises_the_additions_as_documented(tmp_path):
    clip, path = tiny_clip(tmp_path)
    e2 = from_clip(path, entities=["brand", "season"], tokens_per_entity=[1, 3], fusion_layers=[2])
    assert e2.vision_model.selection_tokens.shape == (4, 32)
    torch.testing.assert_close(e2.visual_projection.weight, clip.visual_projection.weight)
    for layer_norm, projection in zip(e2.region_head.layer_norms, e2.region_head.projections):
        torch.testing.assert_close(projection.weight, clip.visual_projection.weight)
        torch.testing.assert_close(layer_norm.weight, clip.vision_model.post_layernorm.weight)
    for name in e2.e2_parameter_names():
        assert torch.isfinite(dict(e2.named_parameters())[name]).all()

    random_start = from_clip(path, projection_init="random", entities=["brand"], fusion_layers=[2])
    assert not torch.allclose(random_start.visual_projection.weight, clip.visual_projection.weight)
    assert not torch.allclose(random_start.region_head.projections[0].weight, clip.visual_projection.weight)
    torch.testing.assert_close(random_start.region_head.layer_norms[0].weight, torch.ones(32))
    with pytest.raises(ValueError, match="projection_init"):
        from_clip(path, projection_init="zeros")
