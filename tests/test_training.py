"""The Accelerate trainer on a small synthetic catalog (CPU)."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from e2_hf import E2CLIPModel, E2CLIPProcessor, from_clip
from e2_hf.data import ImageLoadError
from e2_hf.training import TrainingArguments, TrainingError, train

from .hub_server import LoopbackHub
from .test_hub import TOKEN, hub_env

SMALL = dict(fusion_layers=[1, 2], warmup_epochs=1, epochs=1, batch_size=8, eval_batch_size=16, log_steps=1)


def arguments(small_clip, catalog, output_dir, **overrides) -> TrainingArguments:
    values = dict(
        model=str(small_clip),
        train_data=f"fashiongen:{catalog / 'train.h5'}",
        eval_data=f"jsonl:{catalog / 'catalog.jsonl'}:validation",
        output_dir=str(output_dir),
        **SMALL,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_two_stages_and_hub_ready_outputs(small_clip, catalog, tmp_path):
    summary = train(arguments(small_clip, catalog, tmp_path / "run", save_steps=100, image_fit="pad"))
    assert summary["global_step"] == 2 * (40 // 8) and len(summary["history"]) == 2
    for name in ("model", "best-model"):
        folder = tmp_path / "run" / name
        assert (folder / "modeling_e2clip.py").exists() and (folder / "processor_config.json").exists()
        record = json.loads((folder / "training_args.json").read_text())
        assert record["train_data"] == "fashiongen:train.h5" and str(tmp_path) not in json.dumps(record)
        assert E2CLIPProcessor.from_pretrained(folder).image_processor.image_fit == "pad"  # --image-fit is kept
    model = E2CLIPModel.from_pretrained(tmp_path / "run" / "model")
    assert model.config.entities == ["brand", "season", "subcategory", "composition"]
    assert not list((tmp_path / "run").glob(".*tmp*"))  # no temporary folder left


def test_stage_one_trains_only_the_new_parameters(small_clip, catalog, tmp_path):
    steps_per_epoch = 40 // 8
    train(arguments(small_clip, catalog, tmp_path / "run", stop_after_steps=steps_per_epoch, save_steps=100))
    after = weights(tmp_path / "run" / "checkpoints" / f"checkpoint-{steps_per_epoch}")
    start = from_clip(str(small_clip), fusion_layers=[1, 2]).state_dict()
    new_names = set(from_clip(str(small_clip), fusion_layers=[1, 2]).e2_parameter_names())
    for name, tensor in after.items():
        if name in new_names and name != "vision_model.selection_tokens":
            continue
        if name not in new_names:
            assert torch.equal(tensor, start[name]), f"{name} changed in stage 1"
    changed = [name for name in new_names if name != "vision_model.selection_tokens" and name in after]
    assert changed and any(not torch.equal(after[name], start[name]) for name in changed)


def test_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(small_clip, catalog, tmp_path):
    train(arguments(small_clip, catalog, tmp_path / "straight", save_steps=3))
    interrupted = train(arguments(small_clip, catalog, tmp_path / "resumed", save_steps=3, stop_after_steps=7))
    assert interrupted["global_step"] == 7 and "model" not in interrupted
    assert not (tmp_path / "resumed" / "model").exists()
    resumed = train(arguments(small_clip, catalog, tmp_path / "resumed", save_steps=3, resume_from_checkpoint="latest"))
    assert resumed["global_step"] == 10
    straight, again = weights(tmp_path / "straight" / "model"), weights(tmp_path / "resumed" / "model")
    for name, tensor in straight.items():
        torch.testing.assert_close(again[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert len(list((tmp_path / "resumed" / "checkpoints").iterdir())) <= 3  # save_total_limit


def test_clip_ft_baseline_is_plain_clip(small_clip, catalog, tmp_path):
    summary = train(arguments(small_clip, catalog, tmp_path / "clip-ft", baseline="clip-ft", save_steps=100))
    assert summary["global_step"] == 2 * (40 // 8)  # the same budget as E2's two stages
    assert E2CLIPModel.from_pretrained(tmp_path / "clip-ft" / "model").config.entities == []


def test_the_papers_ablations_are_flags_of_train(small_clip, catalog, tmp_path):
    """No fusion blocks, no region loss, one entity group removed, one token per entity: given as
    `e2-hf train` flags, they reach the model's config, and the run trains and saves it."""
    from e2_hf.cli import build_parser
    from e2_hf.training.cli import arguments_from

    flags = ["train", "--model", str(small_clip), "--train-data", f"fashiongen:{catalog / 'train.h5'}",
             "--output-dir", str(tmp_path / "run"), "--fusion-layers", "none", "--region-loss-weight", "0",
             "--entities", "brand,season,subcategory", "--tokens-per-entity", "1", "--warmup-epochs", "1",
             "--epochs", "1", "--batch-size", "8", "--save-steps", "100"]  # fmt: skip
    args = arguments_from(build_parser("train").parse_args(flags))
    assert args.fusion_layers == [] and args.region_loss_weight == 0.0
    summary = train(args)
    assert summary["global_step"] == 2 * (40 // 8)
    config = E2CLIPModel.from_pretrained(tmp_path / "run" / "model").config
    assert config.fusion_layers == [] and config.region_loss_weight == 0.0
    assert config.entities == ["brand", "season", "subcategory"] and config.tokens_per_entity == [1, 1, 1]


def test_e2_from_a_clip_ft_checkpoint_keeps_its_backbone_and_adds_e2(small_clip, catalog, tmp_path):
    """A CLIP-FT run's model (E2 without entities) is a valid start for E2, as a pretrained CLIP is."""
    train(arguments(small_clip, catalog, tmp_path / "clip-ft", baseline="clip-ft", save_steps=100))
    start = weights(tmp_path / "clip-ft" / "model")
    arguments_e2 = arguments(tmp_path / "clip-ft" / "model", catalog, tmp_path / "e2", save_steps=100,
                             selection_attention="isolated", gumbel_tau=0.5, stop_after_steps=1)  # fmt: skip
    from e2_hf.training.trainer import build_model

    model = build_model(arguments_e2)
    assert model.config.entities == ["brand", "season", "subcategory", "composition"]
    assert model.config.selection_attention == "isolated" and model.config.gumbel_tau == 0.5
    state = model.state_dict()
    assert all(torch.equal(state[name], value) for name, value in start.items())  # every CLIP-FT weight kept
    assert set(state) - set(start) == set(model.e2_parameter_names())


def copy_catalog(catalog, destination):
    shutil.copytree(catalog, destination)
    return destination


def test_unreadable_images_are_skipped_and_counted_or_fail_strictly(small_clip, catalog, tmp_path):
    broken = copy_catalog(catalog, tmp_path / "broken")
    records = [json.loads(line) for line in (broken / "catalog.jsonl").read_text().splitlines()]
    for view in (0, 1):  # product 3's every view is corrupt
        (broken / records[3]["images"][view]).write_bytes(b"not a png")
    spec = f"jsonl:{broken / 'catalog.jsonl'}:train"
    summary = train(
        arguments(
            small_clip, catalog, tmp_path / "lenient", train_data=spec, eval_data=None, warmup_epochs=0, save_steps=100
        )
    )
    assert summary["skipped_images"] == 1
    with pytest.raises(ImageLoadError, match=r"catalog.jsonl row 4, view \d: unreadable image"):
        train(
            arguments(
                small_clip, catalog, tmp_path / "strict", train_data=spec, eval_data=None, warmup_epochs=0, strict=True
            )
        )


def test_training_on_mostly_unreadable_images_stops_without_a_model(small_clip, catalog, tmp_path):
    broken = copy_catalog(catalog, tmp_path / "broken")
    records = [json.loads(line) for line in (broken / "catalog.jsonl").read_text().splitlines()]
    for record in records:
        for image in record["images"]:
            (broken / image).write_bytes(b"not a png")
    spec = f"jsonl:{broken / 'catalog.jsonl'}:train"
    settings = dict(train_data=spec, eval_data=None, warmup_epochs=0, save_steps=100)
    with pytest.raises(TrainingError, match=r"40 of 40 images .* were unreadable .* 0 optimizer steps .*no model"):
        train(arguments(small_clip, catalog, tmp_path / "none", **settings))
    assert not (tmp_path / "none" / "model").exists()
    for record in records[:10]:  # 8 of the 40 training products readable again: 80% unreadable
        for image in record["images"]:
            shutil.copy(catalog / image, broken / image)
    with pytest.raises(TrainingError, match=r"3\d of 40 images .* unreadable \(allowed: 10%"):
        train(arguments(small_clip, catalog, tmp_path / "most", **settings))
    summary = train(arguments(small_clip, catalog, tmp_path / "allowed", max_skipped_share=1.0, **settings))
    assert 30 <= summary["skipped_images"] < 40


def test_bad_data_and_settings_fail_before_training(small_clip, catalog, tmp_path):
    broken = copy_catalog(catalog, tmp_path / "broken")
    lines = (broken / "catalog.jsonl").read_text().splitlines()
    record = json.loads(lines[5])
    record["description"] = "   "
    lines[5] = json.dumps(record)
    (broken / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"catalog.jsonl row 6: field 'description' \(or 'text'\) is empty"):
        train(arguments(small_clip, catalog, tmp_path / "a", train_data=f"jsonl:{broken / 'catalog.jsonl'}"))
    with pytest.raises(
        ValueError,
        match=r"entities \['brand', 'fabric'\] are not all in .*missing \['fabric'\].*"
        r"tag fields \['brand', 'category'",
    ):
        train(arguments(small_clip, catalog, tmp_path / "b", entities=["brand", "fabric"], tokens_per_entity=1))
    with pytest.raises(ValueError, match="must start with one of"):
        train(arguments(small_clip, catalog, tmp_path / "c", train_data=str(catalog / "train.h5")))
    with pytest.raises(ValueError, match="image_fit must be one of"):
        arguments(small_clip, catalog, tmp_path / "d", image_fit="stretch")


def test_non_finite_loss_names_a_checkpoint_whose_weights_gave_a_finite_loss(small_clip, catalog, tmp_path):
    train(arguments(small_clip, catalog, tmp_path / "run", stop_after_steps=2, save_steps=1))
    # with save_steps=1 the checkpoint saved just before the failing step holds the weights that fail
    with pytest.raises(TrainingError) as stopped:
        train(arguments(small_clip, catalog, tmp_path / "run", save_steps=1, warmup_lr=1e30,
                        resume_from_checkpoint="latest"))  # fmt: skip
    match = re.search(
        r"non-finite loss .* at step (\d+),.* last good checkpoint is (.*checkpoint-(\d+))\.", str(stopped.value)
    )
    failed_step, named, named_step = int(match[1]), Path(match[2]), int(match[3])
    assert checkpoint(tmp_path / "run", failed_step - 1).is_dir() and named_step == failed_step - 2
    assert all(torch.isfinite(tensor).all() for tensor in weights(named).values())
    # from the start: the only checkpoint already holds the weights that give the first non-finite loss
    command = [sys.executable, "-m", "e2_hf.cli", "train", "--model", str(small_clip), "--train-data",
               f"fashiongen:{catalog / 'train.h5'}", "--output-dir", str(tmp_path / "fresh"), "--fusion-layers",
               "1,2", "--batch-size", "8", "--save-steps", "1", "--warmup-lr", "1e30"]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert (
        "non-finite loss" in completed.stderr and "No checkpoint with finite-loss weights is kept" in completed.stderr
    )


def checkpoint(run_dir, step: int):
    return run_dir / "checkpoints" / f"checkpoint-{step}"


KILLED_DURING_SAVE = """
import os, signal, sys
from accelerate import Accelerator
from e2_hf.training import TrainingArguments, train

original = Accelerator.save_state
def save_state_then_die(self, output_dir, **kwargs):
    original(self, output_dir, **kwargs)
    if "2" in os.path.basename(output_dir):  # the second checkpoint: its optimizer file not yet written
        os.remove(os.path.join(output_dir, "optimizer.bin"))
        os.kill(os.getpid(), signal.SIGKILL)
Accelerator.save_state = save_state_then_die
train(TrainingArguments(model=sys.argv[1], train_data=sys.argv[2], output_dir=sys.argv[3], fusion_layers=[1, 2],
                        batch_size=8, warmup_epochs=1, epochs=1, save_steps=1))
"""


def test_a_save_killed_midway_is_never_resumed_from(small_clip, catalog, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_DURING_SAVE)
    run_dir = tmp_path / "run"
    command = [sys.executable, str(script), str(small_clip), f"fashiongen:{catalog / 'train.h5'}", str(run_dir)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == -9, completed.stderr[-3000:]
    assert [path.name for path in (run_dir / "checkpoints").glob("checkpoint-*")] == ["checkpoint-1"]
    summary = train(arguments(small_clip, catalog, run_dir, save_steps=1, resume_from_checkpoint="latest"))
    uninterrupted = train(arguments(small_clip, catalog, tmp_path / "whole", save_steps=1))
    assert summary["global_step"] == uninterrupted["global_step"]
    for name, tensor in weights(run_dir / "model").items():
        torch.testing.assert_close(tensor, weights(tmp_path / "whole" / "model")[name])


def test_settings_from_a_file_with_overrides(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"model": "m", "train_data": "jsonl:x.jsonl", "output_dir": "o", "epochs": 3}))
    settings = TrainingArguments.from_file(path, epochs=7)
    assert settings.epochs == 7 and settings.warmup_lr == 5e-4 and settings.batch_size == 64
    path.write_text(json.dumps({"model": "m", "train_data": "t", "output_dir": "o", "epoch": 3}))
    with pytest.raises(ValueError, match=r"unknown settings \['epoch'\]"):
        TrainingArguments.from_file(path)


def test_command_line_with_mixed_precision_accumulation_and_checkpointing(small_clip, catalog, tmp_path):
    """Through `e2-hf train` in a fresh process (Accelerate's precision is fixed once per process)."""
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"model: {small_clip}\ntrain_data: fashiongen:{catalog / 'train.h5'}\nwarmup_epochs: 1\n")
    command = [
        sys.executable,
        "-m",
        "e2_hf.cli",
        "train",
        "--config",
        str(settings),
        "--output-dir",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--fusion-layers",
        "1,2",
        "--mixed-precision",
        "bf16",
        "--gradient-checkpointing",
        "--gradient-accumulation-steps",
        "2",
        "--save-steps",
        "100",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout[completed.stdout.index("{") :])
    assert summary["global_step"] == 2 * math.ceil((40 // 8) / 2)
    model = E2CLIPModel.from_pretrained(tmp_path / "run" / "model")
    assert model.config.fusion_layers == [1, 2]
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())


def test_training_never_runs_code_from_a_model_repo(catalog, tmp_path):
    marker = tmp_path / "written-by-repo-code"
    payload = (
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n\n\n"
        "class CustomConfig(PretrainedConfig):\n    model_type = 'custom_clip'\n"
    )
    config = {"model_type": "custom_clip", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    files = {"config.json": json.dumps(config).encode(), "configuration_custom.py": payload.encode()}
    train_command = [sys.executable, "-m", "e2_hf.cli", "train", "--model", "someone/custom-clip"]
    train_command += ["--train-data", f"fashiongen:{catalog / 'train.h5'}", "--output-dir", str(tmp_path / "run")]
    consenting_load = "import sys; from transformers import AutoConfig; "
    consenting_load += "AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)"
    load_with_consent = [sys.executable, "-c", consenting_load, "someone/custom-clip"]
    with LoopbackHub(TOKEN) as hub:
        hub.publish("someone/custom-clip", files)
        env = hub_env(hub, tmp_path / "home")
        completed = subprocess.run(train_command, env=env, capture_output=True, text=True, timeout=600)
        assert completed.returncode != 0 and "is a 'custom_clip' checkpoint" in completed.stderr
        assert "Traceback" not in completed.stderr and not marker.exists()
        # the payload is live: loading the repo with the user's consent runs it
        subprocess.run(load_with_consent, env=env, capture_output=True, text=True, timeout=600, check=True)
    assert marker.exists()
