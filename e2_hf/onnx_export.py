"""`e2-hf export-onnx`: E2's image and text encoders as ONNX graphs, checked with ONNX Runtime.

    e2-hf export-onnx --model M --output-dir D [--opset 18] [--dtype fp32|fp16] [--quantize int8] [--overwrite]

`D` is a model folder (weights, config, processor, code) with the graphs in `D/onnx/`, the Hub's
layout, so `e2-hf push --model D --with-onnx` publishes both:

- `onnx/image_encoder.onnx`: `pixel_values [batch, 3, size, size]` -> `image_embeds [batch, dim]`,
  with entities `region_embeds [batch, entities, dim]`, and with fusion blocks `selection_indices
  [batch, fusion blocks, selection tokens]` (eval mode: the argmax patch);
- `onnx/text_encoder.onnx`: `input_ids`, `attention_mask [batch, tokens]` -> `text_embeds [batch, dim]`;
- with `--quantize int8`, `*_quantized.onnx` beside them (ONNX Runtime's dynamic int8 quantisation).

Embeddings are L2-normalised, as `E2CLIPModel`'s outputs. The graphs are exported with
`torch.onnx.export(..., dynamo=True)`, torch's maintained exporter, from two small wrapper
modules; the batch (and the text length) are dynamic. After writing, ONNX Runtime runs every graph
on a fixed batch next to PyTorch; the largest differences and the selection agreement are printed,
and the export is refused (an error, non-zero exit) when a graph differs beyond its tolerance or
chooses other patches.
"""

from __future__ import annotations

import argparse
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .choices import EXPORT_DTYPES
from .modeling import E2CLIPModel, E2CLIPProcessor
from .modeling.embedding_e2clip import resolve_dtype

ONNX_FOLDER = "onnx"
IMAGE_GRAPH, TEXT_GRAPH = "image_encoder", "text_encoder"
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}  # largest allowed |ONNX - PyTorch| of an embedding
# int8 graphs: the lowest allowed cosine of the global and text embeddings to PyTorch's. int8 may
# change chosen patches (a discrete choice), so their regional embeddings are reported, not refused.
QUANTIZED_MIN_COSINE = 0.99
VERIFY_TEXTS = ["a red silk shirt by Gucci", "blue denim jeans", "a black leather jacket with a zip"]


class ExportError(ValueError):
    """The export was refused; the message says why."""


class ImageEncoder(nn.Module):
    """pixel_values -> (image_embeds[, region_embeds, selection_indices]), normalised, eval mode."""

    def __init__(self, model: E2CLIPModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values=pixel_values)
        present = (outputs.image_embeds, outputs.region_embeds, outputs.selection_indices)
        return tuple(tensor for tensor in present if tensor is not None)


class TextEncoder(nn.Module):
    """input_ids, attention_mask -> text_embeds (normalised)."""

    def __init__(self, model: E2CLIPModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model(input_ids=input_ids, attention_mask=attention_mask).text_embeds,)


def image_output_names(model: E2CLIPModel) -> list[str]:
    """image_embeds; region_embeds with entities; selection_indices when fusion blocks choose patches."""
    config = model.config
    names = ["image_embeds"]
    if config.num_entities:
        names.append("region_embeds")
    if config.active_fusion_layers:
        names.append("selection_indices")
    return names


@dataclass
class GraphCheck:
    """One graph run by ONNX Runtime next to PyTorch on the fixed batch."""

    path: Path
    max_abs_difference: dict[str, float]  # per floating output
    min_cosine: dict[str, float]
    selection_agreement: float | None  # share of (image, fusion block, token) choices equal; None: no selection

    def lines(self) -> list[str]:
        numbers = ", ".join(f"{name} max |diff| {value:.2e} (min cosine {self.min_cosine[name]:.6f})"
                            for name, value in self.max_abs_difference.items())  # fmt: skip
        if self.selection_agreement is not None:
            numbers += f"; {100 * self.selection_agreement:.1f}% of the patch choices agree"
        return [f"{self.path.name}: {numbers}"]


@dataclass
class ExportReport:
    output_dir: Path
    graphs: list[Path] = field(default_factory=list)
    checks: list[GraphCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verification_inputs(model: E2CLIPModel, processor: E2CLIPProcessor) -> dict[str, torch.Tensor]:
    """A fixed batch: 4 seeded random images at the model's size and a few product texts."""
    size = model.config.vision_config.image_size
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(4, 3, size, size, generator=generator)
    encoded = processor(text=VERIFY_TEXTS)
    return {
        "pixel_values": pixel_values,
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
    }


def _export_graph(module: nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], dynamic_shapes: dict, path: Path, opset: int) -> None:  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
        program = torch.onnx.export(
            module, inputs, input_names=input_names, output_names=output_names, dynamic_shapes=dynamic_shapes,
            opset_version=opset, dynamo=True, verbose=False,
        )  # fmt: skip
    program.save(str(path))


def _run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {node.name for node in session.get_inputs()}
    return session.run(None, {name: value for name, value in feeds.items() if name in wanted})


def check_graph(path: Path, output_names: list[str], feeds: dict[str, np.ndarray],
                reference: tuple[torch.Tensor, ...]) -> GraphCheck:  # fmt: skip
    outputs = _run_onnx(path, feeds)
    differences, cosines, agree = {}, {}, None
    for name, got, expected in zip(output_names, outputs, reference):
        expected = expected.detach().float().cpu().numpy() if expected.is_floating_point() else expected.cpu().numpy()
        if name == "selection_indices":
            agree = float((got == expected).mean())
            continue
        got = got.astype(np.float32)
        differences[name] = float(np.abs(got - expected).max())
        flat_got, flat_expected = got.reshape(-1, got.shape[-1]), expected.reshape(-1, expected.shape[-1])
        cosine = (flat_got * flat_expected).sum(-1) / (
            np.linalg.norm(flat_got, axis=-1) * np.linalg.norm(flat_expected, axis=-1) + 1e-12
        )
        cosines[name] = float(cosine.min())
    return GraphCheck(path, differences, cosines, agree)


def _quantize(path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name(f"{path.stem}_quantized.onnx")
    quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
    return quantized


def _check_installed() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"exporting needs {', '.join(missing)}: pip install 'e2-hf[onnx]'")


def _check_not_the_source(output_dir: Path, source: str) -> None:
    """Refuses an output folder that is, contains or lies inside the model's own folder: `--overwrite`
    would rewrite or delete the source weights (an fp16 export would replace them with fp16 ones)."""
    if not source or not Path(source).is_dir():
        return  # a Hub id: the source is in the cache, not a folder of the user's
    source_path, output_path = Path(source).resolve(), output_dir.resolve()
    if output_path.is_relative_to(source_path) or source_path.is_relative_to(output_path):
        relation = "is" if output_path == source_path else "contains" if source_path.is_relative_to(output_path) \
            else "is inside"  # fmt: skip
        raise ExportError(
            f"--output-dir {output_dir} {relation} the model's own folder {source}: the export would overwrite "
            "the source model; give a separate folder"
        )


def _prepare_output(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise ExportError(f"{output_dir} is not empty; give a new folder or --overwrite")
        shutil.rmtree(output_dir / ONNX_FOLDER, ignore_errors=True)
    (output_dir / ONNX_FOLDER).mkdir(parents=True, exist_ok=True)


def _refusals(check: GraphCheck, dtype: str, quantized: bool) -> list[str]:
    problems = []
    if quantized:
        for name, cosine in check.min_cosine.items():
            if name != "region_embeds" and cosine < QUANTIZED_MIN_COSINE:
                problems.append(f"{check.path.name}: {name} cosine to PyTorch {cosine:.4f} < {QUANTIZED_MIN_COSINE}")
        return problems
    for name, difference in check.max_abs_difference.items():
        if difference > TOLERANCE[dtype]:
            problems.append(f"{check.path.name}: {name} differs from PyTorch by {difference:.2e} > {TOLERANCE[dtype]}")
    if check.selection_agreement is not None and check.selection_agreement < 1.0:
        problems.append(f"{check.path.name}: ONNX Runtime chose other patches than PyTorch")
    return problems


def export_onnx(model: E2CLIPModel, processor: E2CLIPProcessor, output_dir: str | Path, opset: int = 18,
                dtype: str = "fp32", quantize: str | None = None, overwrite: bool = False,
                log=print) -> ExportReport:  # fmt: skip
    """Writes the model folder and its ONNX graphs to `output_dir`, then checks every graph with
    ONNX Runtime against PyTorch; raises `ExportError` when one does not match."""
    _check_installed()
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"--dtype must be one of {EXPORT_DTYPES}, got {dtype!r}")
    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize must be int8, got {quantize!r}")
    if quantize and dtype != "fp32":
        raise ExportError("--quantize int8 starts from the fp32 graphs; leave --dtype at fp32")
    output_dir = Path(output_dir)
    _check_not_the_source(output_dir, str(model.name_or_path))
    _prepare_output(output_dir, overwrite)
    model = model.to("cpu", resolve_dtype(dtype)).eval()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    report = ExportReport(output_dir)
    if not model.config.num_entities:
        report.notes.append("the model has no entities: the image graph gives the global embedding only")

    inputs = verification_inputs(model, processor)
    pixel_values = inputs["pixel_values"].to(resolve_dtype(dtype))
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
    image, text = ImageEncoder(model).eval(), TextEncoder(model).eval()
    image_names = image_output_names(model)
    graphs = [
        (IMAGE_GRAPH, image, (pixel_values,), ["pixel_values"], image_names, {"pixel_values": {0: batch}}),
        (TEXT_GRAPH, text, (inputs["input_ids"], inputs["attention_mask"]), ["input_ids", "attention_mask"],
         ["text_embeds"], {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}}),
    ]  # fmt: skip
    feeds = {"pixel_values": pixel_values.numpy(), "input_ids": inputs["input_ids"].numpy(),
             "attention_mask": inputs["attention_mask"].numpy()}  # fmt: skip
    problems = []
    for name, module, arguments, input_names, output_names, dynamic in graphs:
        path = output_dir / ONNX_FOLDER / f"{name}.onnx"
        log(f"exporting {path} ...")
        _export_graph(module, arguments, input_names, output_names, dynamic, path, opset)
        with torch.no_grad():
            reference = module(*arguments)
        candidates = [(path, False)] + ([(_quantize(path), True)] if quantize else [])
        for graph_path, quantized in candidates:
            check = check_graph(graph_path, output_names, feeds, reference)
            report.graphs.append(graph_path)
            report.checks.append(check)
            problems += _refusals(check, dtype, quantized)
    for line in [line for check in report.checks for line in check.lines()] + report.notes:
        log(line)
    if problems:
        raise ExportError("the ONNX graphs do not match PyTorch, refusing the export:\n" + "\n".join(problems))
    return report


def run(args: argparse.Namespace) -> None:
    from .evaluation.embedding import load_for_inference

    model, processor, _, _ = load_for_inference(args.model, "cpu")
    report = export_onnx(model, processor, args.output_dir, args.opset, args.dtype, args.quantize, args.overwrite)
    folder = Path(args.output_dir) / ONNX_FOLDER
    print(f"wrote {len(report.graphs)} ONNX graphs to {folder}, each checked with ONNX Runtime against PyTorch")
