"""`e2-hf init-from-clip`: transformers CLIP folders and OpenAI-layout files to E2."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPModel

from e2_hf import E2CLIPModel, E2CLIPProcessor
from e2_hf.conversion.convert_clip_to_e2 import init_from_clip, load_openai_layout

from .conftest import E2CLIPModelTester, make_images
from .hostile_files import torchscript_payload
from .openai_layout_clip import OpenAILayoutCLIP
from .test_modeling import features

HEADS = {"vision_heads": 4, "text_heads": 4}


@pytest.fixture(scope="module")
def openai_clip(tiny_processor):
    torch.manual_seed(0)
    return OpenAILayoutCLIP(vocab_size=len(tiny_processor.tokenizer)).eval()


@pytest.fixture(scope="module")
def openai_files(openai_clip, tmp_path_factory):
    folder = tmp_path_factory.mktemp("openai")
    state_dict = {key: value.detach().clone() for key, value in openai_clip.state_dict().items()}
    files = {
        "torchscript": folder / "ViT-tiny.pt",
        "open_clip_bin": folder / "open_clip_pytorch_model.bin",
        "safetensors": folder / "open_clip_model.safetensors",
    }
    torch.jit.save(torch.jit.script(openai_clip), str(files["torchscript"]))
    # OpenAI's archives also store sizes as tensors; open_clip files may carry DataParallel prefixes
    torch.save({f"module.{key}": value for key, value in state_dict.items()}, files["open_clip_bin"])
    save_file({**state_dict, "context_length": torch.tensor(16)}, files["safetensors"])
    return files


def sample_inputs(tiny_processor):
    inputs = tiny_processor(text=["a red shirt", "blue denim jeans by levi"], images=make_images(2))
    return inputs["input_ids"], inputs["pixel_values"]


@pytest.mark.parametrize("kind", ["torchscript", "open_clip_bin", "safetensors"])
def test_openai_layout_files_become_clip_exact_e2(kind, openai_files, openai_clip, tiny_processor, tokenizer_dir):
    model, _, differences = init_from_clip(openai_files[kind], tokenizer=str(tokenizer_dir), entities=[], **HEADS)
    assert all(difference < 1e-5 for difference in differences.values())
    input_ids, pixel_values = sample_inputs(tiny_processor)
    with torch.no_grad():
        # OpenAI's text tower reads the highest id: the processor's end token, also its padding
        torch.testing.assert_close(
            features(model.get_text_features(input_ids)), openai_clip.encode_text(input_ids), rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            features(model.get_image_features(pixel_values)),
            openai_clip.encode_image(pixel_values),
            rtol=1e-5,
            atol=1e-5,
        )


def test_openai_file_to_a_hub_ready_e2_folder(openai_files, tiny_processor, tokenizer_dir, tmp_path):
    output_dir = tmp_path / "e2"
    model, processor, _ = init_from_clip(
        openai_files["safetensors"],
        output_dir,
        tokenizer=str(tokenizer_dir),
        entities=["brand", "season"],
        fusion_layers=[1],
        **HEADS,
    )
    loaded = AutoModel.from_pretrained(output_dir, trust_remote_code=True).eval()
    loaded_processor = AutoProcessor.from_pretrained(output_dir, trust_remote_code=True)
    assert loaded_processor.entities == ["brand", "season"]
    inputs = loaded_processor(text=["a gucci shirt"], images=make_images(1), tags=[{"brand": "gucci"}])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).region_embeds, model(**inputs).region_embeds)
    assert not any(output_dir.glob("*.bin")) and (output_dir / "model.safetensors").exists()


def test_transformers_clip_folder_with_its_processor(tiny_processor, tmp_path):
    tester = E2CLIPModelTester(vocab_size=len(tiny_processor.tokenizer))
    text = dict(tester.config_kwargs["text_config"], eos_token_id=tiny_processor.tokenizer.eos_token_id)
    config = CLIPConfig(text_config=text, vision_config=tester.config_kwargs["vision_config"], projection_dim=16)
    clip_dir = tmp_path / "clip"
    torch.manual_seed(0)
    clip = CLIPModel(config).eval()
    clip.save_pretrained(clip_dir)
    tiny_processor.tokenizer.save_pretrained(clip_dir)
    tiny_processor.image_processor.save_pretrained(clip_dir)

    model, processor, differences = init_from_clip(
        clip_dir, tmp_path / "e2", entities=["brand", "season", "subcategory"], fusion_layers=[1, 2]
    )
    assert list(differences.values())[0] < 1e-5
    assert processor.entities == ["brand", "season", "subcategory"]
    assert (tmp_path / "e2" / "processor_config.json").exists()
    torch.testing.assert_close(model.visual_projection.weight, clip.visual_projection.weight)


def test_bad_sources_fail_clearly(openai_files, openai_clip, tmp_path, tokenizer_dir):
    with pytest.raises(ValueError, match="name its tokenizer with --tokenizer"):
        init_from_clip(openai_files["safetensors"], entities=[], **HEADS)
    state_dict = dict(openai_clip.state_dict())
    save_file({**state_dict, "visual.attnpool.weight": torch.zeros(2)}, tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match=r"keys outside OpenAI's CLIP layout.*attnpool"):
        init_from_clip(tmp_path / "resnet.safetensors", tokenizer=str(tokenizer_dir), entities=[], **HEADS)
    torch.save({"state_dict": state_dict, "extra": E2CLIPModelTester()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        load_openai_layout(tmp_path / "pickled.pt")
    with pytest.raises(FileNotFoundError):
        load_openai_layout(tmp_path / "missing.pt")


def test_torchscript_archives_are_read_without_running_their_code(tmp_path, tokenizer_dir):
    marker = tmp_path / "written-by-the-archive"
    for name in ("ViT-evil.pt", "pytorch_model.bin"):  # a TorchScript zip behind a .bin name too
        archive = torchscript_payload(tmp_path / name, marker)
        (weight,) = load_openai_layout(archive).values()  # the archive's one tensor, read as data
        torch.testing.assert_close(weight, torch.ones(3, 2))
        with pytest.raises(ValueError, match="not an OpenAI-style ViT CLIP"):
            init_from_clip(archive, tokenizer=str(tokenizer_dir), entities=[], **HEADS)
        command = [sys.executable, "-m", "e2_hf.cli", "init-from-clip", "--clip", str(archive)]
        command += ["--tokenizer", str(tokenizer_dir), "--output-dir", str(tmp_path / "e2")]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert completed.returncode != 0 and "not an OpenAI-style ViT CLIP" in completed.stderr
        assert "Traceback" not in completed.stderr
        assert not marker.exists()
    torch.jit.load(str(archive))  # the payload is live: the unsafe reader runs it
    assert marker.exists()


def test_command_line(openai_files, tokenizer_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "e2_hf.cli",
        "init-from-clip",
        "--clip",
        str(openai_files["open_clip_bin"]),
        "--tokenizer",
        str(tokenizer_dir),
        "--output-dir",
        str(tmp_path / "e2"),
        "--vision-heads",
        "4",
        "--text-heads",
        "4",
        "--entities",
        "brand,season",
        "--tokens-per-entity",
        "1,3",
        "--fusion-layers",
        "1",
        "--image-fit",
        "pad",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "text embeddings match transformers CLIPModel" in completed.stdout
    assert "vision_model.selection_tokens (4, 32)" in completed.stdout
    config = E2CLIPModel.from_pretrained(tmp_path / "e2").config
    assert config.tokens_per_entity == [1, 3] and config.fusion_layers == [1]
    assert E2CLIPProcessor.from_pretrained(tmp_path / "e2").image_processor.image_fit == "pad"
