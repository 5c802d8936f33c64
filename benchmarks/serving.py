"""Benchmark 7: serving the image tower, PyTorch eager vs torch.compile vs ONNX Runtime fp32 and int8.

Speed: images per second of E2's image encoder (`e2_hf.onnx_export.ImageEncoder`: global and
regional embeddings and the chosen patches) at ViT-B/32 size with random weights, batch 1 and
batch 32, CPU; the four sides run interleaved and are reported as ratios to PyTorch eager. The
outputs of each side are compared with eager's (largest difference, share of equal patch choices).

Accuracy, on the demo's trained E2 model (`e2-hf demo`) and its validation products:
- reduced precision: how many patch choices change against float32 under fp16 and bf16, with
  autocast and with `.to(dtype)`, with the fusion block's scores in float32 (the model's behaviour)
  and, for comparison, in the reduced dtype; the cosine of the embeddings to float32's;
- int8 ONNX Runtime: cosine of its embeddings to float32's, patch agreement, and retrieval SumR with
  its image embeddings against PyTorch float32's.

    python benchmarks/serving.py [--demo-dir DIR]   # trains the demo there when DIR has no models
"""

import json
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TOY_FUSION_LAYERS, TOY_TEXT, TOY_VISION, interleaved, parser, write_result  # noqa: E402
from report import heading, table  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from e2_hf import E2CLIPConfig, E2CLIPModel, E2CLIPProcessor, clip_image_processor  # noqa: E402
from e2_hf.data import open_catalog  # noqa: E402
from e2_hf.demo import run_demo  # noqa: E402
from e2_hf.evaluation.embedding import embed_catalog, load_for_inference  # noqa: E402
from e2_hf.evaluation.retrieval import retrieval_metrics  # noqa: E402
from e2_hf.modeling.modeling_e2clip import E2CLIPFusionBlock  # noqa: E402
from e2_hf.onnx_export import ImageEncoder, _export_graph, _quantize, image_output_names  # noqa: E402
from e2_hf.synthetic import make_synthetic  # noqa: E402
from e2_hf.tokenization import learn_bpe_merges, write_clip_tokenizer_files  # noqa: E402

GOAL_ONNX_BATCH1 = 1.3


def onnx_session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def export_image_graph(model: E2CLIPModel, folder: Path) -> tuple[Path, Path]:
    """fp32 and int8 ONNX graphs of the image encoder."""
    size = model.config.vision_config.image_size
    path = folder / "image_encoder.onnx"
    names = image_output_names(model)
    _export_graph(ImageEncoder(model).eval(), (torch.randn(2, 3, size, size),), ["pixel_values"], names,
                  {"pixel_values": {0: torch.export.Dim("batch")}}, path, 18)  # fmt: skip
    return path, _quantize(path)


def compare(outputs: list, reference: tuple) -> dict:
    """Largest |difference| of the global embeddings and share of equal patch choices."""
    outputs = [torch.as_tensor(np.asarray(value)) for value in outputs]
    result = {"max_abs_difference": float((outputs[0].float() - reference[0].float()).abs().max())}
    if len(reference) > 2:
        result["selection_agreement"] = float((outputs[2] == reference[2]).float().mean())
    return result


# ------------------------------------------------------------------------------------------- speed
def speed(toy: bool, folder: Path) -> dict:
    if toy:
        config = E2CLIPConfig(text_config=TOY_TEXT, vision_config=TOY_VISION, projection_dim=16,
                              fusion_layers=TOY_FUSION_LAYERS)  # fmt: skip
    else:
        config = E2CLIPConfig()  # ViT-B/32, the paper's fusion layers
    torch.manual_seed(0)
    model = E2CLIPModel(config).eval()
    encoder = ImageEncoder(model).eval()
    compiled = torch.compile(encoder)
    fp32_path, int8_path = export_image_graph(model, folder)
    sessions = {"onnxruntime_fp32": onnx_session(fp32_path), "onnxruntime_int8": onnx_session(int8_path)}
    size, repeats = config.vision_config.image_size, (3 if toy else 7)
    results = {}
    for batch_size in (1, 32):
        pixel_values = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(batch_size))
        results[f"batch_{batch_size}"] = time_batch(encoder, compiled, sessions, pixel_values,
                                                    repeats if batch_size == 32 else repeats * 5)  # fmt: skip
    return results


@torch.no_grad()
def time_batch(encoder, compiled, sessions: dict, pixel_values: torch.Tensor, repeats: int) -> dict:
    """Images per second of each side, as ratios to eager, and each side's outputs against eager's."""
    feed = {"pixel_values": pixel_values.numpy()}
    reference = encoder(pixel_values)
    compiled(pixel_values)  # compile outside the timing
    sides = {
        "pytorch_eager": lambda: encoder(pixel_values),
        "pytorch_compile": lambda: compiled(pixel_values),
        **{name: (lambda session=session: session.run(None, feed)) for name, session in sessions.items()},
    }
    timings = interleaved(sides, repeats=repeats)
    agreement = {"pytorch_compile": compare(list(compiled(pixel_values)), reference)}
    agreement |= {name: compare(session.run(None, feed), reference) for name, session in sessions.items()}
    eager, batch_size = timings["pytorch_eager"]["median_s"], pixel_values.shape[0]
    return {
        name: {
            "images_per_s": batch_size / timing["median_s"],
            "ratio_to_eager": eager / timing["median_s"],
            "median_s": timing["median_s"],
            **agreement.get(name, {}),
        }
        for name, timing in timings.items()
    }


# ---------------------------------------------------------------------------------------- accuracy
def scores_in_model_dtype(block, selection, patches):
    """The fusion block before the float32 scores: projections and product in the running dtype."""
    return block.q_proj(selection) @ block.k_proj(patches).transpose(1, 2) * block.scale


def run_images(model, pixel_values, mode: str, dtype: torch.dtype) -> tuple:
    if mode == "to_dtype":
        model = model.to(dtype)
        pixel_values = pixel_values.to(dtype)
    context = torch.autocast("cpu", dtype=dtype) if mode == "autocast" else nullcontext()
    with torch.no_grad(), context:
        outputs = model(pixel_values=pixel_values)
    model.float()
    return outputs.image_embeds.float(), outputs.region_embeds.float(), outputs.selection_indices


def precision_table(model, pixel_values) -> dict:
    reference = run_images(model, pixel_values, "fp32", torch.float32)
    table = {}
    for dtype_name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        for mode in ("autocast", "to_dtype"):
            row = {}
            for scores in ("float32", "model_dtype"):
                original = E2CLIPFusionBlock.selection_scores
                if scores == "model_dtype":
                    E2CLIPFusionBlock.selection_scores = scores_in_model_dtype
                try:
                    image, region, selection = run_images(model, pixel_values, mode, dtype)
                finally:
                    E2CLIPFusionBlock.selection_scores = original
                row[f"scores_{scores}"] = {
                    "changed_choices_percent": 100 * float((selection != reference[2]).float().mean()),
                    "min_cosine_global": float(F.cosine_similarity(image, reference[0], dim=-1).min()),
                    "min_cosine_region": float(F.cosine_similarity(region, reference[1], dim=-1).min()),
                    "mean_cosine_region": float(F.cosine_similarity(region, reference[1], dim=-1).mean()),
                }
            table[f"{dtype_name}_{mode}"] = row
    return table


def int8_cost(model, processor, catalog, folder: Path) -> dict:
    embeddings = embed_catalog(model, processor, catalog)
    pixel_values = torch.cat(
        [processor(images=[catalog.load_image(row, 0)])["pixel_values"] for row in range(len(catalog))]
    )
    with torch.no_grad():
        reference = ImageEncoder(model)(pixel_values)
    fp32_path, int8_path = export_image_graph(model, folder)
    result = {}
    for name, path in (("onnxruntime_fp32", fp32_path), ("onnxruntime_int8", int8_path)):
        outputs = [
            torch.as_tensor(value) for value in onnx_session(path).run(None, {"pixel_values": pixel_values.numpy()})
        ]
        result[name] = {
            "min_cosine_global": float(F.cosine_similarity(outputs[0], reference[0], dim=-1).min()),
            "mean_cosine_region": float(F.cosine_similarity(outputs[1], reference[1], dim=-1).mean()),
            "selection_agreement_percent": 100 * float((outputs[2] == reference[2]).float().mean()),
            "sumr": retrieval_metrics(outputs[0], embeddings.text_embeds)["sumr"],
        }
    result["pytorch_fp32_sumr"] = retrieval_metrics(embeddings.image_embeds, embeddings.text_embeds)["sumr"]
    return result, pixel_values


def toy_demo(folder: Path) -> None:
    """The demo's layout at toy size, untrained: a tiny random E2 and a small synthetic catalog."""
    make_synthetic(folder / "catalog", products=20, views=1, image_size=32, hard=True, progress=False)
    texts = [json.loads(line)["description"] for line in (folder / "catalog" / "catalog.jsonl").open()]
    tokenizer_dir = write_clip_tokenizer_files(learn_bpe_merges(texts, num_merges=300), folder / "tokenizer", 16)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text_config = {**TOY_TEXT, "vocab_size": len(tokenizer), "max_position_embeddings": 16,
                   "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    config = E2CLIPConfig(text_config=text_config, vision_config=TOY_VISION, projection_dim=16,
                          fusion_layers=TOY_FUSION_LAYERS)  # fmt: skip
    torch.manual_seed(0)
    E2CLIPModel(config).save_pretrained(folder / "e2-model")
    E2CLIPProcessor(clip_image_processor(32), tokenizer, entities=config.entities).save_pretrained(folder / "e2-model")


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--demo-dir", help="an `e2-hf demo` output folder (default: a new temporary one)")
    args = arguments.parse_args()
    demo_dir = Path(args.demo_dir or tempfile.mkdtemp(prefix="e2-serving-"))
    if not (demo_dir / "e2-model").is_dir():
        toy_demo(demo_dir) if args.toy else run_demo(demo_dir, seed=0)
    with tempfile.TemporaryDirectory() as scratch:
        speeds = speed(args.toy, Path(scratch))
        model, processor, _, _ = load_for_inference(demo_dir / "e2-model", "cpu")
        catalog = open_catalog(f"jsonl:{demo_dir / 'catalog' / 'catalog.jsonl'}:validation")
        int8, pixel_values = int8_cost(model, processor, catalog, Path(scratch))
    precision = precision_table(model, pixel_values)
    batch1 = speeds["batch_1"]["onnxruntime_fp32"]
    print(f"ONNX Runtime fp32 / PyTorch eager at batch 1: {batch1['ratio_to_eager']:.2f}x (goal {GOAL_ONNX_BATCH1}x), "
          f"largest difference {batch1['max_abs_difference']:.1e}")  # fmt: skip
    for batch, sides in speeds.items():
        print(
            batch,
            {name: f"{side['images_per_s']:.1f} img/s ({side['ratio_to_eager']:.2f}x)" for name, side in sides.items()},
        )
    write_result(
        "serving",
        {
            "setting": (
                f"image encoder (global + regional embeddings + chosen patches), CPU, "
                f"{'toy sizes' if args.toy else 'ViT-B/32 E2, random weights'} for speed, medians of interleaved runs; "
                f"accuracy on {'an untrained toy E2' if args.toy else 'the `e2-hf demo` E2 model'}, "
                f"{len(catalog)} validation products"
            ),
            "speed": speeds,
            "goal_onnx_fp32_ratio_batch_1": GOAL_ONNX_BATCH1,
            "precision": precision,
            "int8": int8,
        },
        args.output,
    )


# ---------------------------------------------------------------- its section of BENCHMARKS.md
SERVING_SIDES = {
    "pytorch_eager": "PyTorch eager (fp32)",
    "pytorch_compile": "PyTorch torch.compile",
    "onnxruntime_fp32": "ONNX Runtime fp32",
    "onnxruntime_int8": "ONNX Runtime int8",
}


def render(result: dict) -> list[str]:
    speed_rows = []
    for side, label in SERVING_SIDES.items():
        one, many = result["speed"]["batch_1"][side], result["speed"]["batch_32"][side]
        difference = "" if side == "pytorch_eager" else f"{one['max_abs_difference']:.1e}"
        agreement = "" if "selection_agreement" not in one else f"{100 * one['selection_agreement']:.1f}%"
        speed_rows.append([
            label, f"{one['images_per_s']:.1f}", f"{one['ratio_to_eager']:.2f}x", f"{many['images_per_s']:.1f}",
            f"{many['ratio_to_eager']:.2f}x", difference, agreement,
        ])  # fmt: skip
    precision_rows = []
    for name, row in result["precision"].items():
        precision = name.replace("_to_dtype", " .to(dtype)").replace("_autocast", " autocast")
        for scores, label in (("scores_float32", "float32 (the model)"), ("scores_model_dtype", "reduced dtype")):
            cells = row[scores]
            precision_rows.append([
                precision, label, f"{cells['changed_choices_percent']:.2f}%", f"{cells['min_cosine_global']:.5f}",
                f"{cells['mean_cosine_region']:.5f}", f"{cells['min_cosine_region']:.5f}",
            ])  # fmt: skip
    int8 = result["int8"]
    int8_rows = [
        [label, f"{int8[side]['min_cosine_global']:.5f}", f"{int8[side]['mean_cosine_region']:.5f}",
         f"{int8[side]['selection_agreement_percent']:.1f}%", f"{int8[side]['sumr']:.1f}"]
        for side, label in (("onnxruntime_fp32", "ONNX Runtime fp32"), ("onnxruntime_int8", "ONNX Runtime int8"))
    ]  # fmt: skip
    batch1 = result["speed"]["batch_1"]["onnxruntime_fp32"]
    goal = result["goal_onnx_fp32_ratio_batch_1"]
    reached = "met" if batch1["ratio_to_eager"] >= goal and batch1["max_abs_difference"] <= 1e-4 else "missed"
    return [
        *heading("7. Serving: PyTorch, torch.compile and ONNX Runtime", result["setting"]),
        *table(
            [
                "side",
                "batch 1 img/s",
                "vs eager",
                "batch 32 img/s",
                "vs eager",
                "max diff (batch 1)",
                "patch choices equal",
            ],
            speed_rows,
        ),  # fmt: skip
        "",
        f"ONNX Runtime fp32 at batch 1: **{batch1['ratio_to_eager']:.2f}x** PyTorch eager (goal >= {goal}x with "
        f"embeddings equal to 1e-4; largest difference {batch1['max_abs_difference']:.1e}): **{reached}**.",
        "",
        "Reduced precision on the trained demo model, against float32 (the fusion block's query-key scores in "
        "float32, as the model computes them, or in the reduced dtype, as before):",
        "",
        *table(
            [
                "precision",
                "selection scores in",
                "patch choices changed",
                "min cosine global",
                "mean cosine regional",
                "min cosine regional",
            ],
            precision_rows,
        ),  # fmt: skip
        "",
        f"int8 (dynamic quantisation) on the demo model; PyTorch float32 SumR {int8['pytorch_fp32_sumr']:.1f}:",
        "",
        *table(["graph", "min cosine global", "mean cosine regional", "patch choices equal", "SumR"], int8_rows),
        "",
    ]


if __name__ == "__main__":
    main()
