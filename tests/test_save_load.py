"""Saving, loading with the Auto classes, and loading as remote code in a fresh process."""

import json
import os
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor

from e2_hf import E2CLIPImageProcessor, E2CLIPModel

from .conftest import make_images, run_without_the_project

TEXTS = ["a red silk shirt by gucci", "blue denim jeans"]
TAGS = [{"brand": "gucci", "composition": "silk"}, {"brand": "levi", "subcategory": "jeans"}]


@pytest.fixture
def saved_model(tmp_path, tokenized_tester, tiny_processor):
    torch.manual_seed(0)
    model = E2CLIPModel(tokenized_tester.get_config()).eval()
    folder = tmp_path / "e2-tiny"
    model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return model, folder


def test_folder_layout_and_auto_map(saved_model):
    _, folder = saved_model
    names = set(os.listdir(folder))
    assert {
        "model.safetensors",
        "config.json",
        "configuration_e2clip.py",
        "modeling_e2clip.py",
        "processing_e2clip.py",
        "image_processing_e2clip.py",
        "processor_config.json",
        "tokenizer_config.json",
    } <= names
    assert {"loss_e2clip.py", "packaging_e2clip.py", "handler.py", "embedding_e2clip.py"} <= names
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_e2clip.E2CLIPConfig",
        "AutoModel": "modeling_e2clip.E2CLIPModel",
        "AutoModelForZeroShotImageClassification": "modeling_e2clip.E2CLIPModel",
    }
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_e2clip.E2CLIPProcessor"
    image_config, _ = E2CLIPImageProcessor.get_image_processor_dict(folder)  # where this transformers saved it
    assert image_config["image_processor_type"] == "E2CLIPImageProcessor"
    assert image_config["auto_map"]["AutoImageProcessor"] == "image_processing_e2clip.E2CLIPImageProcessor"
    assert not any(
        str(folder.parent) in (folder / name).read_text(errors="ignore")
        for name in names
        if name.endswith((".json", ".txt"))
    )  # no local absolute paths in the files


def test_round_trip_with_the_registered_auto_classes(saved_model, tiny_processor):
    model, folder = saved_model
    assert type(AutoConfig.from_pretrained(folder)).__name__ == "E2CLIPConfig"
    loaded = AutoModel.from_pretrained(folder).eval()
    assert isinstance(loaded, E2CLIPModel)
    assert isinstance(AutoModelForZeroShotImageClassification.from_pretrained(folder), E2CLIPModel)
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(text=TEXTS, images=make_images(2), tags=TAGS)
    with torch.no_grad():
        expected, actual = model(**inputs, return_loss=True), loaded(**inputs, return_loss=True)
    for name in ("loss", "image_embeds", "text_embeds", "region_embeds"):
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    sys.modules["e2_hf"] = None  # this project must not be importable
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline

    folder, inputs_path, output_path = sys.argv[1:4]
    saved = json.load(open(inputs_path))
    saved["images"] = [Image.open(path) for path in saved["images"]]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = processor(text=saved["texts"], images=saved["images"], tags=saved["tags"])
    with torch.no_grad():
        outputs = model(**inputs, return_loss=True)
    classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
    scores = classifier(saved["images"][0], candidate_labels=saved["texts"], hypothesis_template="{}")
    extractor = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
    image_features = torch.tensor(extractor(saved["images"][0]))
    torch.save({
        "inputs": dict(inputs), "image_embeds": outputs.image_embeds, "text_embeds": outputs.text_embeds,
        "region_embeds": outputs.region_embeds, "loss": outputs.loss,
        "zero_shot": {item["label"]: item["score"] for item in scores}, "feature": image_features,
    }, output_path)
    """
)


# A Python with the other transformers major version (.ci/run sets it to its 4.57 venv, and back); folders
# saved by one version are loaded as remote code by the other.
OTHER_TRANSFORMERS_PYTHON = os.environ.get("E2_HF_OTHER_TRANSFORMERS_PYTHON")


def _python_of(which: str) -> str:
    if which == "this transformers":
        return sys.executable
    if not OTHER_TRANSFORMERS_PYTHON:
        pytest.skip("E2_HF_OTHER_TRANSFORMERS_PYTHON is not set (.ci/run sets it to a transformers 4.57 venv)")
    return OTHER_TRANSFORMERS_PYTHON


@pytest.mark.parametrize("which", ["this transformers", "the other transformers"])
def test_fresh_process_loads_the_folder_as_remote_code(saved_model, tmp_path, which):
    python = _python_of(which)
    model, folder = saved_model
    image_paths = []
    for index, image in enumerate(make_images(2)):
        image_paths.append(str(tmp_path / f"image-{index}.png"))
        image.save(image_paths[-1])
    (tmp_path / "inputs.json").write_text(json.dumps({"texts": TEXTS, "images": image_paths, "tags": TAGS}))
    run_without_the_project(
        FRESH_PROCESS_SCRIPT, tmp_path, folder, tmp_path / "inputs.json", tmp_path / "outputs.pt", python=python
    )
    remote = torch.load(tmp_path / "outputs.pt", weights_only=True)

    with torch.no_grad():
        local = model(**remote["inputs"], return_loss=True)
        local_single = model(pixel_values=remote["inputs"]["pixel_values"][:1])
    for name in ("image_embeds", "text_embeds", "region_embeds", "loss"):
        torch.testing.assert_close(remote[name], local[name], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(remote["feature"].reshape(1, -1), local_single.image_embeds, rtol=1e-5, atol=1e-6)
    # the pipeline's scores are the softmax of the in-memory model's logits for that image
    text_inputs = {key: remote["inputs"][key] for key in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(**text_inputs, pixel_values=remote["inputs"]["pixel_values"][:1]).logits_per_image
    expected = dict(zip(TEXTS, logits.softmax(dim=-1)[0].tolist()))
    for label, score in remote["zero_shot"].items():
        assert score == pytest.approx(expected[label], abs=1e-5)


PAD_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["e2_hf"] = None  # this project must not be importable
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoProcessor

    folder, image_path, output_path = sys.argv[1:4]
    image = Image.open(image_path)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)  # what pipelines load
    torch.save({"fit": processor.image_processor.image_fit,
                "processor": processor(images=[image])["pixel_values"],
                "image_processor": image_processor(image, return_tensors="pt")["pixel_values"]}, output_path)
    """
)


def test_a_pad_framing_is_applied_by_a_folder_loaded_as_remote_code(tiny_processor, tmp_path):
    """The framing is part of the saved processor: a fresh process without this project frames the
    same way through AutoProcessor and through AutoImageProcessor (what pipelines use)."""
    from e2_hf import E2CLIPProcessor, clip_image_processor

    processor = E2CLIPProcessor(clip_image_processor(32, "pad"), tiny_processor.tokenizer, entities=["brand"])
    processor.save_pretrained(tmp_path / "pad")
    image = make_images(1)[0].resize((30, 60))  # a portrait
    image.save(tmp_path / "portrait.png")
    run_without_the_project(PAD_SCRIPT, tmp_path, tmp_path / "pad", tmp_path / "portrait.png", tmp_path / "out.pt")
    remote = torch.load(tmp_path / "out.pt", weights_only=True)
    expected = processor(images=[image])["pixel_values"]
    assert remote["fit"] == "pad"
    torch.testing.assert_close(remote["processor"], expected, rtol=0, atol=0)
    torch.testing.assert_close(remote["image_processor"], expected, rtol=0, atol=0)
    cropped = tiny_processor(images=[image])["pixel_values"]
    assert not torch.equal(cropped, expected)


# A folder saved by e2-hf 0.1.0, whose modeling_e2clip.py still held the losses and the deployment files
# (tests/fixtures/e2_folder_0.1.0.md says how it was made).
OLD_LAYOUT_ARCHIVE = Path(__file__).parent / "fixtures" / "e2_folder_0.1.0.tar.gz"

OLD_LAYOUT_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["e2_hf"] = None  # this project must not be importable
    import torch
    from transformers import AutoModel

    folder, inputs_path, output_path = sys.argv[1:4]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        outputs = model(**torch.load(inputs_path, weights_only=True))
    torch.save({name: outputs[name] for name in ("image_embeds", "text_embeds", "region_embeds")}, output_path)
    """
)


@pytest.mark.parametrize("which", ["this transformers", "the other transformers"])
def test_a_folder_in_the_old_layout_loads_with_its_own_code_and_with_this_one(tmp_path, which):
    from .conftest import E2CLIPModelTester

    python = _python_of(which)
    with tarfile.open(OLD_LAYOUT_ARCHIVE) as archive:
        archive.extractall(tmp_path, filter="data")
    old_folder = tmp_path / "e2_folder_0.1.0"
    tester = E2CLIPModelTester()
    input_ids, attention_mask = tester.input_ids()
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": tester.pixel_values()}
    torch.save(inputs, tmp_path / "inputs.pt")
    run_without_the_project(
        OLD_LAYOUT_SCRIPT, tmp_path, old_folder, tmp_path / "inputs.pt", tmp_path / "old.pt", python=python
    )
    old_code = torch.load(tmp_path / "old.pt", weights_only=True)

    current = AutoModel.from_pretrained(old_folder).eval()  # this package's classes, no remote code
    assert type(current) is E2CLIPModel
    current.save_pretrained(tmp_path / "resaved")  # and a re-save in the current layout loads the same
    resaved = AutoModel.from_pretrained(tmp_path / "resaved").eval()
    assert {"loss_e2clip.py", "packaging_e2clip.py"} <= set(os.listdir(tmp_path / "resaved"))
    with torch.no_grad():
        for model in (current, resaved):
            outputs = model(**inputs)
            for name, expected in old_code.items():
                torch.testing.assert_close(outputs[name], expected, rtol=1e-6, atol=1e-6)
