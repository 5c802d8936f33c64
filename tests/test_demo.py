"""`e2-hf demo --quick` and `e2-hf make-synthetic` end to end (subprocesses, as a user runs them)."""

import json
import subprocess
import sys

from PIL import Image

from e2_hf import E2CLIPModel, from_clip

KEYS = {"R@1", "R@5", "R@10"}


def test_quick_demo_writes_models_and_a_real_report(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "e2_hf.cli", "demo", "--output-dir", str(tmp_path), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    for model in ("e2", "clip_ft"):
        for protocol in ("full", "sample100"):
            block = report[model][protocol]
            assert set(block["image_to_text"]) == set(block["text_to_image"]) == KEYS
            recalls = [block[direction][k] for direction in ("image_to_text", "text_to_image") for k in KEYS]
            assert all(0 <= value <= 100 for value in recalls)
            assert abs(block["sumr"] - sum(recalls)) < 1e-6
    assert report["catalog"]["products"] == 160 and report["seconds"]["total"] > 0
    assert E2CLIPModel.from_pretrained(tmp_path / "e2-model").config.entities
    assert E2CLIPModel.from_pretrained(tmp_path / "clip-ft-model").config.entities == []
    assert "| E2 | full |" in (tmp_path / "report.md").read_text()
    captioning = report["captioning"]
    assert captioning["captions"] == 32 and len(captioning["examples"]) == 3
    assert set(captioning["attribute_accuracy"]) == {"brand", "season", "subcategory", "composition"}
    assert all(0 <= value <= 1 for value in captioning["attribute_accuracy"].values())
    assert (tmp_path / "e2-captioner" / "captioner_config.json").is_file()
    assert f"- caption: {captioning['examples'][0]['caption']}" in (tmp_path / "report.md").read_text()
    assert Image.open(tmp_path / "selection.png").size[0] > 0


def test_make_synthetic_command(tmp_path):
    command = [
        sys.executable,
        "-m",
        "e2_hf.cli",
        "make-synthetic",
        "--output-dir",
        str(tmp_path),
        "--products",
        "10",
        "--views",
        "2",
        "--image-size",
        "32",
        "--hard",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["validation_products"] == 2
    assert (tmp_path / "train.h5").exists() and len(list((tmp_path / "images").glob("*.png"))) == 20


def test_the_shipped_pretrained_base_fits_the_demo():
    """The demo starts from e2_hf/assets/small-clip-synthetic: it must load as a CLIP, turn into E2
    and match the demo's image and patch sizes and test bed."""
    import json

    from transformers import CLIPModel

    from e2_hf import E2CLIPProcessor
    from e2_hf.demo import DEFAULT, PRETRAINED_BASE, TESTBED

    clip = CLIPModel.from_pretrained(PRETRAINED_BASE)
    vision = clip.config.vision_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size) == (
        DEFAULT.image_size, DEFAULT.patch_size, DEFAULT.width,
    )  # fmt: skip
    record = json.loads((PRETRAINED_BASE / "pretraining.json").read_text())
    assert {key: record["catalog"][key] for key in TESTBED} == TESTBED and record["catalog"]["seed"] not in (0, 1, 2)
    model = from_clip(str(PRETRAINED_BASE), fusion_layers=DEFAULT.fusion_layers)
    processor = E2CLIPProcessor.from_pretrained(str(PRETRAINED_BASE), entities=model.config.entities)
    tokens = processor.tokenizer(["Aurel", "SS2017"])["input_ids"]
    assert all(
        ids[0] == processor.tokenizer.bos_token_id and ids[-1] == processor.tokenizer.eos_token_id for ids in tokens
    )
