"""Publish a saved E2 folder to the Hugging Face Hub, then check what was published.

    e2-hf push --model e2-fashion --repo-id my-org/e2-fashion [--private] [--revision BRANCH]
               [--commit-message MSG] [--metrics metrics.json] [--base-model ID] [--license ID] [--with-onnx]

1. Validate the folder: every file present, weights in safetensors only, and it loads with
   `trust_remote_code=True` in a fresh process.
2. Render `model_card.md` into the repo's README.md (metadata, model-index from `--metrics`), and
   check everything to be uploaded, the rendered card included, for absolute local paths (any,
   not only this folder's: a config naming a data folder or a card naming a local base model).
3. Upload with huggingface_hub in one commit (`create_repo(exist_ok=True)`, `upload_folder`).
   A failed upload leaves the remote repo at its previous commit; an unchanged folder makes no
   commit.
4. Download the repo into a fresh cache in a fresh process and check its outputs equal the local
   model's.

The token comes only from huggingface_hub's own mechanisms (`HF_TOKEN`, `hf auth login`) and is
never written anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from e2_hf.local_paths import check_no_local_paths, local_path_leaks
from e2_hf.modeling.packaging_e2clip import DEPLOYMENT_CODE_FILES

from .cli import add_push_arguments
from .common import command_main

# beside these, the code files of every class in config.json's auto_map (their own imports are
# proven by loading the folder in a fresh interpreter before the upload)
REQUIRED_FILES = ("config.json", "processor_config.json", "tokenizer_config.json", *DEPLOYMENT_CODE_FILES)
TOKENIZER_FILE_SETS = (("vocab.json", "merges.txt"), ("tokenizer.json",))
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".pth.tar")
OUTPUT_TOLERANCE = 1e-5
CARD_TEMPLATE = "model_card.md"

# Run in a fresh interpreter where this project is not importable: the folder or repo must stand
# on its own (torch + transformers + its code files).
EMBED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["e2_hf"] = None  # this project must not be importable
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    source, revision, output = sys.argv[1], sys.argv[2] or None, sys.argv[3]
    model = AutoModel.from_pretrained(source, revision=revision, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(source, revision=revision, trust_remote_code=True)
    ramp = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)
    images = [Image.fromarray(ramp), Image.fromarray(ramp[::-1].copy())]
    tags = [{entity: f"sample {entity}" for entity in processor.entities} for _ in images]
    inputs = processor(text=["a black leather jacket", "a red silk dress"], images=images, tags=tags or None)
    with torch.no_grad():
        outputs = model(**inputs, return_loss=True)
    result = {name: outputs[name].tolist() for name in ("image_embeds", "text_embeds", "region_embeds", "loss")
              if outputs[name] is not None}
    json.dump(result, open(output, "w"))
    """
)


class PushError(RuntimeError):
    """A push that could not be completed; the message says what happened to the remote repo."""


@dataclass
class PushResult:
    repo_url: str
    commit: str
    changed: bool
    max_difference: float


# ------------------------------------------------------------------------------------ validation
def validate_model_folder(folder: str | Path) -> None:
    """Raises `ValueError` naming every problem of the folder (files, weights, local paths)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    names = {path.name for path in folder.iterdir() if path.is_file()}
    required = [*REQUIRED_FILES, *_auto_map_code_files(folder)]
    problems = [f"missing {name}" for name in dict.fromkeys(required) if name not in names]
    if "preprocessor_config.json" not in names and not _has_nested_image_processor(folder):
        problems.append("missing the image processor (preprocessor_config.json, or in processor_config.json)")
    if not any(all(name in names for name in file_set) for file_set in TOKENIZER_FILE_SETS):
        problems.append("missing the tokenizer (vocab.json + merges.txt, or tokenizer.json)")
    if not any(name in names for name in WEIGHT_FILES):
        problems.append("missing model.safetensors: the weights must be in safetensors")
    problems += [
        f"{name}: pickled weights are not published, use safetensors"
        for name in sorted(names)
        if name.endswith(PICKLE_SUFFIXES)
    ]
    problems += [f"local path in {leak}" for leak in local_path_leaks(folder)]
    if problems:
        raise ValueError(f"{folder} cannot be published: " + "; ".join(problems))


def _auto_map_code_files(folder: Path) -> list[str]:
    """`["configuration_e2clip.py", "modeling_e2clip.py", ...]`: the files named by the `auto_map` of
    the model's and the processor's settings (transformers writes one entry per saved class)."""
    code_files = []
    for name in ("config.json", "processor_config.json", "preprocessor_config.json"):
        try:
            settings = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a missing or unreadable file is reported as such
        nested = [value for value in settings.values() if isinstance(value, dict)] if isinstance(settings, dict) else []
        for record in (settings, *nested):  # transformers 5.x nests the image processor's settings
            auto_map = record.get("auto_map") if isinstance(record, dict) else None
            if isinstance(auto_map, dict):
                code_files += [f"{path.split('.')[0]}.py" for path in auto_map.values() if isinstance(path, str)]
    return code_files


def _has_nested_image_processor(folder: Path) -> bool:
    """transformers 5.x saves the image processor's settings inside `processor_config.json`."""
    try:
        settings = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and isinstance(settings.get("image_processor"), dict)


def fresh_process_outputs(source: str, revision: str | None = None, env: dict[str, str] | None = None) -> dict:
    """Loads `source` (folder or repo id) as remote code in a fresh interpreter; its outputs on
    fixed sample inputs."""
    with tempfile.TemporaryDirectory() as scratch:
        script, output = Path(scratch) / "embed.py", Path(scratch) / "outputs.json"
        script.write_text(EMBED_SCRIPT)
        completed = subprocess.run(
            [sys.executable, str(script), source, revision or "", str(output)],
            cwd=scratch,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if completed.returncode != 0:
            raise ValueError(
                f"{source} does not load with trust_remote_code=True in a fresh process:\n{completed.stderr[-2000:]}"
            )
        return json.loads(output.read_text())


def max_difference(first: dict, second: dict) -> float:
    import torch

    if first.keys() != second.keys():
        raise ValueError(f"outputs differ in kind: {sorted(first)} vs {sorted(second)}")
    return max(float((torch.tensor(first[key]) - torch.tensor(second[key])).abs().max()) for key in first)


# ------------------------------------------------------------------------------------ model card
def load_card_template() -> str:
    return resources.files("e2_hf.conversion").joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")


def eval_results(metrics: dict[str, Any], dataset_name: str) -> list:
    """`model-index` entries from an `e2-hf evaluate` file or a demo report (its `"e2"` part)."""
    from huggingface_hub import EvalResult

    metrics = metrics.get("e2", metrics)

    def result(metric_type: str, metric_name: str, value: float) -> EvalResult:
        return EvalResult(
            task_type="image-text-retrieval",
            task_name="Image-text retrieval",
            dataset_type=dataset_name.lower().replace(" ", "-"),
            dataset_name=dataset_name,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=float(value),
        )

    results = []
    for protocol in ("full", "sample100"):
        block = metrics.get(protocol, {})
        for direction in ("image_to_text", "text_to_image"):
            for k, value in block.get(direction, {}).items():
                results.append(result(f"recall@{k.split('@')[-1]}", f"{protocol} {direction} {k}", value))
        if "sumr" in block:
            results.append(result("sumr", f"{protocol} SumR", block["sumr"]))
    return results


def render_model_card(
    folder: str | Path,
    repo_id: str,
    metrics: dict[str, Any] | None = None,
    base_model: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    dataset_name: str = "evaluation set",
) -> str:
    """The repo's README.md: `model_card.md` with metadata, model-index and the model's facts."""
    from huggingface_hub import ModelCardData

    from e2_hf.modeling import E2CLIPConfig
    from e2_hf.parameters import count_for_config

    folder = Path(folder)
    config = E2CLIPConfig.from_pretrained(folder)
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        tags=["e2", "clip", "fashion", "custom_code"],
        base_model=base_model,
        datasets=datasets or None,
        license=license,
        inference=False,
        model_name=model_name,
        eval_results=eval_results(metrics, dataset_name) if metrics else None,
    )
    report = count_for_config(config)
    values = {
        "card_data": card_data.to_yaml(),
        "model_name": model_name,
        "repo_id": repo_id,
        "entities": ", ".join(config.entities) or "none (plain CLIP)",
        "tokens_per_entity": ", ".join(str(count) for count in config.tokens_per_entity) or "0",
        "fusion_layers": ", ".join(str(index) for index in config.fusion_layers),
        "parameter_summary": f"{report.clip_parameters:,} CLIP parameters + {report.e2_new_parameters:,} added by E2 "
        f"({100 * report.share_of_clip:.2f}%)",
        "training": _training_section(folder),
        "evaluation": _evaluation_section(metrics, dataset_name),
    }
    card = load_card_template()
    for key, value in values.items():
        card = card.replace("{{ " + key + " }}", value)
    if "{{" in card:
        raise ValueError(f"the model card template has unknown placeholders: {card[card.index('{{') :][:60]}")
    return card


def _training_section(folder: Path) -> str:
    arguments = folder / "training_args.json"
    if not arguments.exists():
        return (
            "No training record (`training_args.json`) was published with this model. The E2 recipe: a "
            "warm-up of the new parameters, then all parameters, with the global and region contrastive losses."
        )
    settings = json.loads(arguments.read_text())
    rows = "\n".join(f"| {key} | {json.dumps(value)} |" for key, value in sorted(settings.items()))
    return f"Training settings (`training_args.json`):\n\n| setting | value |\n| --- | --- |\n{rows}"


def _evaluation_section(metrics: dict[str, Any] | None, dataset_name: str) -> str:
    if not metrics:
        return "No evaluation results were published with this model."
    metrics = metrics.get("e2", metrics)
    lines = [
        f"Retrieval on {dataset_name}, recalls in percent:",
        "",
        "| protocol | direction | R@1 | R@5 | R@10 |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for protocol in ("full", "sample100"):
        for direction in ("image_to_text", "text_to_image"):
            row = metrics.get(protocol, {}).get(direction)
            if row:
                cells = " | ".join(f"{row.get(k, float('nan')):.2f}" for k in ("R@1", "R@5", "R@10"))
                lines.append(f"| {protocol} | {direction.replace('_', ' ')} | {cells} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ pushing
def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload E2 model",
    metrics: dict[str, Any] | None = None,
    base_model: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    dataset_name: str = "evaluation set",
    with_onnx: bool = False,
    log=print,
) -> PushResult:
    """Validates, uploads in one commit, and verifies `model_dir` as `repo_id` (see module doc).
    `with_onnx` also uploads `onnx/` (the graphs `e2-hf export-onnx` wrote)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    model_dir = Path(model_dir)
    validate_model_folder(model_dir)
    if with_onnx and not any((model_dir / "onnx").glob("*.onnx")):
        raise PushError(
            f"{model_dir / 'onnx'} holds no .onnx graph: run `e2-hf export-onnx` first, or push without --with-onnx"
        )
    card = render_model_card(model_dir, repo_id, metrics, base_model, license, datasets, dataset_name)
    api = HfApi()
    branch = revision or "main"
    with tempfile.TemporaryDirectory() as staging:
        _stage(model_dir, Path(staging), card, with_onnx)
        check_no_local_paths(staging, f"pushing {model_dir}")  # what is uploaded, the rendered card included
        log(f"validated {model_dir}: files, safetensors weights, no local paths in anything uploaded")
        local_outputs = fresh_process_outputs(str(model_dir.resolve()))
        log("loads with trust_remote_code=True in a fresh process")
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            if branch != "main":
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            head_before = api.repo_info(repo_id, revision=branch).sha
        except HfHubHTTPError as error:
            raise PushError(f"cannot prepare {repo_id}@{branch} on {api.endpoint}: {error}") from error
        try:
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=staging, revision=branch, commit_message=commit_message
            )
        except (HfHubHTTPError, OSError) as error:
            head_now = _head_or_none(api, repo_id, branch)
            state = "unchanged" if head_now == head_before else f"now at {head_now}"
            raise PushError(
                f"upload to {repo_id}@{branch} failed: {error}\nThe remote repo is {state} "
                f"(it was at {head_before}); nothing was half-committed, since the upload is one commit."
            ) from error
    changed = commit.oid != head_before
    log(f"committed {commit.oid} to {repo_id}@{branch}" if changed else "nothing changed: no commit was made")

    with tempfile.TemporaryDirectory() as fresh_cache:
        remote_outputs = fresh_process_outputs(
            repo_id, branch, env={"HF_HUB_CACHE": fresh_cache, "HF_MODULES_CACHE": os.path.join(fresh_cache, "modules")}
        )
    difference = max_difference(local_outputs, remote_outputs)
    if difference > OUTPUT_TOLERANCE:
        raise PushError(f"{repo_id}@{branch} was uploaded, but its outputs differ from the local ones by {difference}")
    log(f"verified: {repo_id}@{branch} in a fresh cache gives the local model's outputs (max diff {difference:.1e})")
    return PushResult(str(repo_url), commit.oid, changed, difference)


def _stage(model_dir: Path, staging: Path, card: str, with_onnx: bool) -> None:
    for path in model_dir.iterdir():
        if path.is_file() and path.name != "README.md":
            shutil.copy2(path, staging / path.name)
    if with_onnx:
        shutil.copytree(model_dir / "onnx", staging / "onnx")
    (staging / "README.md").write_text(card, encoding="utf-8")


def _head_or_none(api, repo_id: str, branch: str) -> str | None:
    try:
        return api.repo_info(repo_id, revision=branch).sha
    except Exception:  # the repo may be unreachable: report what is known
        return None


# ------------------------------------------------------------------------------------ command line
def run(args: argparse.Namespace) -> None:
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    try:
        push_to_hub(
            args.model,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            metrics=metrics,
            base_model=args.base_model,
            license=args.license,
            datasets=args.datasets,
            dataset_name=args.dataset_name,
            with_onnx=args.with_onnx,
        )
    except PushError as error:
        raise ValueError(str(error)) from None


def main(argv: list[str] | None = None) -> None:
    command_main(add_push_arguments, run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
