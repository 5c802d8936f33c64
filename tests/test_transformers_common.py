"""transformers' common model and config tests, run on `E2CLIPModel` the way the library runs
them on `CLIPModel` (tests/models/clip/test_modeling_clip.py), in E2 mode (selection tokens,
fusion blocks, tags and the region loss) and in CLIP mode (`entities=[]`).

The mixins come from the installed transformers version's source distribution (see
`transformers_common_tests.py`); without it the module skips with the reason, or fails where
`E2_HF_REQUIRE_TRANSFORMERS_COMMON_TESTS` is set (CI sets it).
"""

from __future__ import annotations

import os
import tempfile
import unittest

import numpy as np
import pytest
import torch
import transformers

from e2_hf import E2CLIPConfig, E2CLIPModel, E2CLIPTextConfig, E2CLIPVisionConfig

from . import transformers_common_tests
from .conftest import E2CLIPModelTester

if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("the common tests run on transformers 5.x; 4.57 runs the project's own", allow_module_level=True)
try:
    modeling_common, configuration_common = transformers_common_tests.load()
except Exception as error:  # no package index, no sdist for this version, a changed test layout
    if os.environ.get("E2_HF_REQUIRE_TRANSFORMERS_COMMON_TESTS"):  # CI: these tests must run
        raise
    pytest.skip(f"transformers' common tests are unavailable: {error}", allow_module_level=True)

ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester

# One tag per item and entity (brand, season, subcategory, composition); None = missing.
TAGS = [
    [[11, 12], [20], [30, 31, 32], [40]],
    [[13], [20], [33], None],
    [[11, 12], [21], [30, 31, 32], [41, 42]],
    [[14], None, [34], [40]],
]


class CommonTester(E2CLIPModelTester):
    """The fields and inputs the common tests read, on the project's tiny model."""

    is_training = True

    num_hidden_layers = 2  # per tower: transformers' common tests keep models at two layers

    def __init__(self, parent: unittest.TestCase, **overrides):
        super().__init__(**overrides)
        self.parent = parent
        self.text_config = self.config_kwargs["text_config"]
        self.vision_config = self.config_kwargs["vision_config"]
        self.text_config["num_hidden_layers"] = self.vision_config["num_hidden_layers"] = self.num_hidden_layers
        self.hidden_size = self.vision_config["hidden_size"]

    def prepare_config_and_inputs_for_common(self):
        input_ids, attention_mask = self.input_ids()
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": self.pixel_values(),
            "return_loss": True,
        }
        if self.config_kwargs["entities"]:
            inputs["tag_input_ids"], inputs["tag_attention_mask"] = self.tags(TAGS)
        return self.get_config(), inputs


class E2CLIPModelCommonTest(ModelTesterMixin, unittest.TestCase):
    """E2 mode. Class settings and skips are CLIPModel's, with CLIP's reasons."""

    all_model_classes = (E2CLIPModel,)
    additional_model_inputs = ["pixel_values"]
    test_resize_embeddings = False
    test_attention_outputs = False
    _is_composite = True
    tester_overrides: dict = {"fusion_layers": [0, 1]}  # a fusion block after each of the two layers

    def setUp(self):
        self.model_tester = CommonTester(self, **self.tester_overrides)
        self.config_tester = ConfigTester(
            self,
            config_class=E2CLIPConfig,
            has_text_modality=False,
            common_properties=["projection_dim", "logit_scale_init_value"],
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        """CLIP's positional order: `model(input_ids, pixel_values, attention_mask)`."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = E2CLIPModel(config).eval()
        with torch.no_grad():
            outputs = model(inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"])
        batch = self.model_tester.batch_size
        self.assertEqual(outputs.logits_per_image.shape, (batch, batch))
        self.assertEqual(outputs.logits_per_text.shape, (batch, batch))

    def test_load_vision_text_config(self):
        """Each tower's config loads on its own from the saved composite config."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        with tempfile.TemporaryDirectory() as folder:
            config.save_pretrained(folder)
            self.assertDictEqual(config.vision_config.to_dict(), E2CLIPVisionConfig.from_pretrained(folder).to_dict())
            self.assertDictEqual(config.text_config.to_dict(), E2CLIPTextConfig.from_pretrained(folder).to_dict())

    @unittest.skip(reason="CLIPModel: hidden states are tested per tower (tests/test_modeling.py here)")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="CLIPModel: inputs_embeds is tested per tower; E2 has no inputs_embeds")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="CLIPModel: retain_grad is tested per tower")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @unittest.skip(reason="CLIPModel: a dual encoder has no single input/output embedding")
    def test_model_get_set_embeddings(self):
        pass

    @unittest.skip(reason="CLIPModel: the text tower has two masks (causal and padding)")
    def test_sdpa_can_dispatch_on_flash(self):
        pass

    @unittest.skip(reason="CLIPModel: the contrastive loss cannot be compiled with dynamic shapes")
    def test_sdpa_can_compile_dynamic(self):
        pass

    def test_initialization(self):
        """CLIPModel's own version: logit_scale starts at log(1/0.07), the rest at mean 0 or 1
        when every initialiser range is zero."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = E2CLIPModel(config=modeling_common._config_zero_init(config))
        for name, parameter in model.named_parameters():
            if name == "logit_scale":
                self.assertAlmostEqual(parameter.item(), np.log(1 / 0.07), delta=1e-3, msg=name)
            else:
                mean = ((parameter.data.mean() * 1e9).round() / 1e9).item()
                self.assertIn(mean, [0.0, 1.0], msg=f"{name} is not initialised from the config")


class E2CLIPModelCommonTestClipMode(E2CLIPModelCommonTest):
    """`entities=[]`: no selection tokens, no fusion blocks, CLIP exactly."""

    tester_overrides = {"entities": [], "fusion_layers": []}
