"""Every benchmark script runs at a toy size and the report generator reads its JSON (they never rot)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from e2_hf import from_clip
from e2_hf.compat import projected_features

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    "script",
    [
        "bench_inference",
        "bench_train_step",
        "bench_retrieval",
        "bench_data",
        "bench_quality",
        "bench_tagging",
        "framing",
        "serving",
        "search_scale",
        "downstream",
        "hostile_input",
        "startup",
        "milvus_store",
    ],
)
def test_benchmark_runs_at_toy_size(script, tmp_path):
    output = tmp_path / f"{script}.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), "--toy", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["machine"]["cores"] >= 1 and result["setting"]
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import make_report

        section = make_report.render_section(result["benchmark"], result)
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert section[0].startswith("## ") and len(section) > 3
    if script == "serving":  # torch.compile and ONNX Runtime give eager's outputs on the image encoder
        for batch in result["speed"].values():
            for side in ("pytorch_compile", "onnxruntime_fp32"):
                assert batch[side]["max_abs_difference"] < 1e-4 and batch[side]["selection_agreement"] == 1.0, side


def test_selection_experiments_run_at_toy_size_and_render(tmp_path):
    output = tmp_path / "selection_experiments.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "selection_experiments.py"), "--toy", "--testbed", "grid8_b12_palette",
         "--recipe", "mp_isolated", "--clip-ft", "--output-dir", str(tmp_path / "runs"), "--output", str(output)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    (run,) = result["runs"]
    assert run["recipe_settings"]["selection_attention"] == "isolated" and "clip_ft" in run
    assert set(run["e2"]["selection"]["entities"]) == {"brand", "season", "subcategory", "composition"}
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import make_report

        section = make_report.render_section("selection_experiments", result)
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert any("| grid8_b12_palette | mp_isolated | 0 |" in line for line in section)
    # the discussion quotes this run (from random weights, isolated) and leaves out the runs not made
    discussion = "\n".join(section)
    assert "isolation alone does not do it" in discussion and "A learnable test bed" not in discussion


def test_pretraining_script_writes_a_clip_that_e2_starts_from(tmp_path):
    """benchmarks/pretrain_small_clip.py at a toy size: a plain transformers CLIP folder whose
    weights are the pretraining run's, from which E2 is built as from any CLIP."""
    import torch
    from transformers import CLIPModel

    from e2_hf import E2CLIPModel

    output, work = tmp_path / "base", tmp_path / "work"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pretrain_small_clip.py"), "--products", "30", "--epochs", "1",
         "--batch-size", "8", "--output-dir", str(output), "--work-dir", str(work)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads((output / "pretraining.json").read_text())
    assert record["catalog"]["captions"] == "varied" and record["catalog"]["hard"] is False
    clip = CLIPModel.from_pretrained(output, dtype=torch.float32).eval()
    assert {"vocab.json", "merges.txt"} <= {path.name for path in output.iterdir()}
    trained = E2CLIPModel.from_pretrained(work / "run" / "model").eval()
    pixels = torch.randn(2, 3, clip.config.vision_config.image_size, clip.config.vision_config.image_size)
    with torch.no_grad():
        ours = trained.get_image_features(pixel_values=pixels)
        theirs = clip.get_image_features(pixel_values=pixels)
    ours, theirs = (projected_features(value) for value in (ours, theirs))
    assert torch.allclose(ours, theirs, atol=2e-2, rtol=2e-2)  # float16 storage
    e2 = from_clip(str(output), fusion_layers=[1, 2])
    assert e2.config.entities and e2.config.vision_config.patch_size == clip.config.vision_config.patch_size


def test_real_catalog_benchmark_runs_and_renders(tmp_path):
    from .conftest import SHARED, require_shared

    require_shared(SHARED / "data" / "real_catalog")
    output = tmp_path / "real_catalog.json"
    completed = subprocess.run([sys.executable, str(BENCHMARKS / "real_catalog.py"), "--output", str(output)],
                               capture_output=True, text=True, timeout=600)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    cleaned, kept = result["texts"]["cleaned"]["description_only"], result["texts"]["html_kept"]["description_only"]
    assert cleaned["median_tokens"] < kept["median_tokens"]  # markup tokens are gone
    assert result["multi_value_labels"]["season"]["values"] < result["multi_value_labels"]["season"]["one_label_each"]
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import make_report

        section = make_report.render_section("real_catalog", result)
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert section[0].startswith("## ") and any("centre crop" in line for line in section)
