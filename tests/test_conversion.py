"""The authors'-checkpoint converter against the outputs their code produced (spec, section 6)."""

import argparse
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from e2_hf import E2CLIPModel
from e2_hf.conversion.convert_original_e2 import (
    UNUSED_KEYS,
    convert_original_checkpoint,
    convert_state_dict,
    load_original_checkpoint,
)

from .conftest import FIXTURE_DIR, require_shared
from .hostile_files import torchscript_payload
from .test_modeling import features

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def fixture_dir():
    return require_shared(FIXTURE_DIR)


@pytest.fixture(scope="module")
def reference(fixture_dir):
    return load_file(fixture_dir / "reference_outputs.safetensors")


@pytest.fixture(scope="module")
def converted(fixture_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("converted")
    convert_original_checkpoint(fixture_dir / "official_checkpoint.pth", output_dir, vision_heads=4, text_heads=4)
    return E2CLIPModel.from_pretrained(output_dir).eval()


def test_converted_model_reproduces_the_reference_outputs(converted, reference):
    with torch.no_grad():
        image_embeds = features(converted.get_image_features(reference["pixel_values"]))
        text_embeds = features(converted.get_text_features(reference["input_ids"]))
        region_embeds = converted.get_region_features(reference["pixel_values"])
        outputs = converted(pixel_values=reference["pixel_values"])
    torch.testing.assert_close(image_embeds, reference["image_embeds"], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(text_embeds, reference["text_embeds"], rtol=0, atol=TOLERANCE)
    for entity in range(3):  # entity 4 differs on purpose: the reference pools it from one token
        torch.testing.assert_close(
            region_embeds[:, entity], reference[f"region_embeds_{entity + 1}"], rtol=0, atol=TOLERANCE
        )
    assert torch.equal(outputs.selection_indices[:, 0], reference["selected_patches_fusion_1"])
    assert torch.equal(outputs.selection_indices[:, 1], reference["selected_patches_fusion_2"])
    assert converted.config.entities == ["subcategory", "brand", "description", "season"]
    assert converted.config.text_config.eos_token_id == 299


def test_last_entity_differs_only_by_the_reference_one_token_quirk(converted, reference):
    """Pooling the last entity from its first token alone (the reference's slice) gives its output."""
    with torch.no_grad():
        vision = converted.vision_model(reference["pixel_values"])
        first_token = vision.last_hidden_state[:, 6:7]
        head = converted.region_head
        quirk = head.projections[3](head.layer_norms[3](first_token).mean(dim=1))
        ours = converted.get_region_features(reference["pixel_values"])[:, 3]
    torch.testing.assert_close(quirk, reference["region_embeds_4"], rtol=0, atol=TOLERANCE)
    assert (ours - reference["region_embeds_4"]).abs().max() > 1e-3


def test_all_reference_layouts_load_the_same(fixture_dir, tmp_path):
    state_dict = load_original_checkpoint(fixture_dir / "official_checkpoint.pth")
    prefixed = {f"module.{key}": value for key, value in state_dict.items()}
    training_checkpoint = {"state_dict": prefixed, "epoch": 3, "args": argparse.Namespace(lr=5e-5, batch_size=64)}
    torch.save(training_checkpoint, tmp_path / "ckpt.pth.tar")
    torch.save(state_dict, tmp_path / "bare.pt")
    for name in ("ckpt.pth.tar", "bare.pt"):
        loaded = load_original_checkpoint(tmp_path / name)
        assert loaded.keys() == state_dict.keys()
        assert all(torch.equal(loaded[key], state_dict[key]) for key in state_dict)


def test_unexpected_and_missing_keys_fail(fixture_dir):
    state_dict = load_original_checkpoint(fixture_dir / "official_checkpoint.pth")
    with pytest.raises(ValueError, match=r"unexpected keys .*visual\.mystery"):
        convert_state_dict({**state_dict, "visual.mystery": torch.zeros(1)})
    for unused in UNUSED_KEYS:  # the reference's documented unused tensors are dropped quietly
        assert unused in state_dict
    incomplete = {key: value for key, value in state_dict.items() if key != "visual.ln_post.weight"}
    with pytest.raises(ValueError, match=r"missing \['vision_model\.post_layernorm\.weight'\]"):
        from e2_hf.conversion.convert_original_e2 import infer_config, load_into_model

        load_into_model(infer_config(incomplete, vision_heads=4, text_heads=4), convert_state_dict(incomplete))


class ArbitraryObject:
    """Stands for any pickled object a weights-only load must refuse."""


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(1)}, "extra": ArbitraryObject()}, tmp_path / "unsafe.pth")
    with pytest.raises(ValueError, match="refusing to load"):
        load_original_checkpoint(tmp_path / "unsafe.pth")


def test_torchscript_checkpoints_are_refused_unread(tmp_path):
    marker = tmp_path / "written-by-the-archive"
    archive = torchscript_payload(tmp_path / "checkpoint.pth", marker)
    with pytest.raises(ValueError, match="is a TorchScript archive.*not loaded"):
        load_original_checkpoint(archive)
    command = [sys.executable, "-m", "e2_hf.cli", "convert-original", "--checkpoint", str(archive)]
    completed = subprocess.run(command + ["--output-dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert completed.returncode != 0 and "is a TorchScript archive" in completed.stderr
    assert "Traceback" not in completed.stderr and not marker.exists()


def test_command_line(fixture_dir, tmp_path):
    output_dir = tmp_path / "cli"
    command = [
        sys.executable,
        "-m",
        "e2_hf.cli",
        "convert-original",
        "--checkpoint",
        str(fixture_dir / "official_checkpoint.pth"),
        "--output-dir",
        str(output_dir),
        "--entities",
        "category,brand,text,season",
        "--vision-heads",
        "4",
        "--text-heads",
        "4",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert (output_dir / "model.safetensors").exists() and (output_dir / "preprocessor_config.json").exists()
    assert E2CLIPModel.from_pretrained(output_dir).config.entities == ["category", "brand", "text", "season"]

    bad = subprocess.run(command[:-4] + ["--entities", "a,b"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "names 2 entities but the checkpoint has 4" in bad.stderr
