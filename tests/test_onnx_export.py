"""`e2-hf export-onnx`: the graphs ONNX Runtime runs equal PyTorch's, at any batch size."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from e2_hf import E2CLIPModel, onnx_export
from e2_hf.onnx_export import ExportError, export_onnx

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the test extra has it)")
pytest.importorskip("onnxscript", reason="torch.onnx's exporter needs onnxscript (the test extra has it)")


def _session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture
def tiny_e2(tokenized_tester):
    torch.manual_seed(0)
    return E2CLIPModel(tokenized_tester.get_config()).eval()


def test_export_runs_in_onnx_runtime_like_pytorch_at_other_batch_sizes(tiny_e2, tiny_processor, tmp_path):
    lines = []
    report = export_onnx(tiny_e2, tiny_processor, tmp_path / "out", quantize="int8", log=lines.append)
    onnx_dir = tmp_path / "out" / "onnx"
    names = sorted(path.name for path in onnx_dir.glob("*.onnx"))
    assert names == ["image_encoder.onnx", "image_encoder_quantized.onnx", "text_encoder.onnx",
                     "text_encoder_quantized.onnx"]  # fmt: skip
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "handler.py").is_file()
    assert any("100.0% of the patch choices agree" in line for line in lines)
    assert {check.path.name for check in report.checks} == set(names)

    pixel_values = torch.randn(3, 3, 32, 32)  # another batch size than the export's
    image_embeds, region_embeds, selection = _session(onnx_dir / "image_encoder.onnx").run(
        None, {"pixel_values": pixel_values.numpy()}
    )
    encoded = tiny_processor(text=["a shirt", "blue denim jeans by levi"])
    (text_embeds,) = _session(onnx_dir / "text_encoder.onnx").run(
        None, {"input_ids": encoded["input_ids"].numpy(), "attention_mask": encoded["attention_mask"].numpy()}
    )
    with torch.no_grad():
        expected = tiny_e2(pixel_values=pixel_values)
        expected_text = tiny_e2(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    np.testing.assert_allclose(image_embeds, expected.image_embeds.numpy(), atol=1e-4)
    np.testing.assert_allclose(region_embeds, expected.region_embeds.numpy(), atol=1e-4)
    np.testing.assert_array_equal(selection, expected.selection_indices.numpy())
    np.testing.assert_allclose(text_embeds, expected_text.text_embeds.numpy(), atol=1e-4)


def test_a_model_without_fusion_blocks_exports_regions_without_patch_choices(tokenized_tester):
    tokenized_tester.config_kwargs["fusion_layers"] = []
    model = E2CLIPModel(tokenized_tester.get_config()).eval()
    assert onnx_export.image_output_names(model) == ["image_embeds", "region_embeds"]
    outputs = onnx_export.ImageEncoder(model)(tokenized_tester.pixel_values())
    assert [tuple(output.shape) for output in outputs] == [(4, 16), (4, 4, 16)]


def test_a_graph_beyond_its_tolerance_is_refused(tiny_e2, tiny_processor, tmp_path, monkeypatch):
    monkeypatch.setitem(onnx_export.TOLERANCE, "fp32", 0.0)  # any difference at all is now too much
    with pytest.raises(ExportError, match="do not match PyTorch, refusing the export"):
        export_onnx(tiny_e2, tiny_processor, tmp_path / "out", log=lambda line: None)


def test_a_model_without_entities_exports_the_global_graph_in_fp16(tokenized_tester, tiny_processor, tmp_path):
    tokenized_tester.config_kwargs.update(entities=[], fusion_layers=[])
    lines = []
    model = E2CLIPModel(tokenized_tester.get_config())
    export_onnx(model, tiny_processor, tmp_path / "out", dtype="fp16", log=lines.append)  # checked within 2e-2
    outputs = [output.name for output in _session(tmp_path / "out" / "onnx" / "image_encoder.onnx").get_outputs()]
    assert outputs == ["image_embeds"]
    assert any("no entities: the image graph gives the global embedding only" in line for line in lines)


def test_the_command_refuses_a_folder_that_is_not_empty(tiny_e2, tiny_processor, tmp_path):
    tiny_e2.save_pretrained(tmp_path / "model")
    tiny_processor.save_pretrained(tmp_path / "model")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    completed = subprocess.run(
        [sys.executable, "-m", "e2_hf.cli", "export-onnx", "--model", str(tmp_path / "model"),
         "--output-dir", str(tmp_path / "taken")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode != 0
    assert "is not empty; give a new folder or --overwrite" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_an_output_that_is_contains_or_lies_inside_the_source_is_refused(tiny_e2, tiny_processor, tmp_path):
    source = tmp_path / "models" / "e2"
    tiny_e2.save_pretrained(source)
    tiny_processor.save_pretrained(source)
    weights = (source / "model.safetensors").read_bytes()
    completed = subprocess.run(
        [sys.executable, "-m", "e2_hf.cli", "export-onnx", "--model", str(source), "--output-dir", str(source),
         "--dtype", "fp16", "--overwrite"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert f"--output-dir {source} is the model's own folder" in completed.stderr
    assert (source / "model.safetensors").read_bytes() == weights  # not rewritten as float16
    loaded = E2CLIPModel.from_pretrained(source)
    for output, relation in ((source / "onnx-export", "is inside"), (tmp_path / "models", "contains")):
        with pytest.raises(ExportError, match=f"{relation} the model's own folder"):
            export_onnx(loaded, tiny_processor, output, overwrite=True)
    assert not (source / "onnx").exists() and not (source / "onnx-export").exists()


def test_a_model_path_that_does_not_exist_is_named(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "e2_hf.cli", "export-onnx", "--model", "/nonexistent/e2", "--output-dir",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert "/nonexistent/e2 does not exist: give a model folder, or a Hub repo id" in completed.stderr
    assert "Repo id must" not in completed.stderr and not (tmp_path / "out").exists()
