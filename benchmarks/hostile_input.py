"""Benchmark 10: what the hostile-input defences cost and bound.

1. Checking a FAISS file's SHA-256 before FAISS reads it, on every open of an index, at 1M rows:
   the time of the checksum against the time of `faiss.read_index` itself (the open without the
   check, the named baseline), for the index types an index holds at that size (`auto` picks
   IVF-PQ beyond 100k rows; flat is the exact one). Both files are read from the page cache (warm:
   each was just written); medians of interleaved repeats. An index opens one file per target
   (global + each entity), all of the same size.
2. The memory one endpoint request costs: peak resident memory of `EndpointHandler` (a fresh
   process per request, the model already loaded) for a normal photo (the baseline), the largest
   images the default limits accept, and the hostile files the limits now refuse.

    python benchmarks/hostile_input.py [--toy]
"""

import base64
import io
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TOY_TEXT, TOY_VISION, parser, write_result  # noqa: E402
from report import table  # noqa: E402

from e2_hf.search import engine  # noqa: E402
from e2_hf.search.engine import SearchSettings  # noqa: E402
from e2_hf.search.index import file_sha256  # noqa: E402

DIMENSION = 512
REPEATS = 3


def faiss_file(folder: Path, kind: str, rows: int, dimension: int) -> Path:
    """A FAISS file of `rows` random unit vectors, built as the index builds its own."""
    rng = np.random.default_rng(0)
    settings = SearchSettings(index_type=kind)
    blocks = []
    for start in range(0, rows, 100_000):
        block = rng.standard_normal((min(100_000, rows - start), dimension), dtype=np.float32)
        blocks.append(block / np.linalg.norm(block, axis=1, keepdims=True))
    sample = blocks[0][:: max(1, rows // (settings.lists(rows) * 64))] if kind == "ivfpq" else None
    index = engine.build_index(iter(blocks), rows, dimension, kind, settings, "float32", sample)
    path = folder / f"{kind}.index"
    engine.write_index(index, path)
    return path


def checksum_cost(rows: int, dimension: int) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("ivfpq", "flat"):
            start = time.perf_counter()
            path = faiss_file(Path(folder), kind, rows, dimension)
            built = time.perf_counter() - start
            times = {"read_index": [], "sha256": []}
            for _ in range(REPEATS):
                for name, run, argument in (("read_index", lambda file: engine.read_index(file, rows, dimension), path),
                                            ("sha256", file_sha256, path)):  # fmt: skip
                    start = time.perf_counter()
                    run(argument)
                    times[name].append(time.perf_counter() - start)
            median = {name: statistics.median(values) for name, values in times.items()}
            results[kind] = {"bytes": path.stat().st_size, "build_s": built, "runs": times,
                             "read_index_s": median["read_index"], "sha256_s": median["sha256"],
                             "checksum_over_read": median["sha256"] / median["read_index"],
                             "sha256_mb_per_s": path.stat().st_size / 1e6 / median["sha256"]}  # fmt: skip
            print(f"{kind} at {rows:,} rows ({path.stat().st_size / 1e6:,.0f} MB): read_index "
                  f"{median['read_index']:.2f} s, SHA-256 {median['sha256']:.2f} s "
                  f"({results[kind]['checksum_over_read']:.2f}x the read)")  # fmt: skip
            path.unlink()
    return results


# VmHWM: the process's own peak resident memory (ru_maxrss would carry the parent's over fork and exec)
REQUEST = textwrap.dedent(
    """
    import json, sys
    def peak_kib():
        line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        return int(line.split()[1])
    sys.path.insert(0, sys.argv[1])
    from handler import EndpointHandler
    handler = EndpointHandler(path=sys.argv[1])
    before = peak_kib()
    response = handler({"inputs": {"image": open(sys.argv[2]).read()}})
    print(json.dumps({"peak_kib": peak_kib(), "loaded_kib": before, "error": response.get("error")}))
    """
)


def request_images(toy: bool) -> dict[str, Image.Image]:
    """A normal photo (the baseline), the largest images the default limits accept, hostile files."""
    side = 7_071  # 50 MP: the default limit
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1340, 1080, 3), dtype=np.uint8))
    if toy:  # one refused request (no forward pass): each request costs a fresh process
        return {"1-bit 1000000x1 strip (refused)": Image.new("1", (1_000_000, 1))}
    return {
        "photo 1080x1340 (baseline)": photo,
        f"RGB {side}x{side} (at the pixel limit)": Image.new("RGB", (side, side), (200, 30, 30)),
        f"16-bit {side}x{side} (at the pixel limit)": Image.fromarray(np.full((side, side), 40000, dtype=np.uint16)),
        "RGB 20000x1000 (at the aspect-ratio limit)": Image.new("RGB", (20_000, 1_000), (10, 10, 10)),
        "1-bit 1000000x1 strip (refused)": Image.new("1", (1_000_000, 1)),
        "1-bit 1.5x Pillow's limit (refused)": Image.new("1", (11_585, 11_585)),
    }


def request_memory(toy: bool) -> dict:
    import torch

    from e2_hf import E2CLIPConfig, E2CLIPModel
    from e2_hf.demo import PRETRAINED_BASE
    from e2_hf.modeling import E2CLIPProcessor
    from e2_hf.modeling.image_processing_e2clip import clip_image_processor

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        torch.manual_seed(0)
        config = E2CLIPConfig(vision_config=TOY_VISION, text_config=TOY_TEXT, fusion_layers=[1, 2]) if toy \
            else E2CLIPConfig()  # fmt: skip
        E2CLIPModel(config).save_pretrained(folder / "model")
        size = config.vision_config.image_size
        tokenizer = E2CLIPProcessor.from_pretrained(PRETRAINED_BASE).tokenizer  # the packaged small CLIP's
        E2CLIPProcessor(image_processor=clip_image_processor(size), tokenizer=tokenizer,
                        entities=config.entities).save_pretrained(folder / "model")  # fmt: skip
        for name, image in request_images(toy).items():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            request = folder / "request.b64"
            request.write_text(base64.b64encode(buffer.getvalue()).decode())
            completed = subprocess.run([sys.executable, "-c", REQUEST, str(folder / "model"), str(request)],
                                       capture_output=True, text=True, timeout=900)  # fmt: skip
            if completed.returncode != 0:
                raise RuntimeError(f"{name}: {completed.stderr[-2000:]}")
            measured = json.loads(completed.stdout.strip().splitlines()[-1])
            results[name] = {"png_bytes": len(buffer.getvalue()), "peak_mib": measured["peak_kib"] / 1024,
                             "extra_mib": (measured["peak_kib"] - measured["loaded_kib"]) / 1024,
                             "refused": measured["error"]}  # fmt: skip
            print(f"{name}: {len(buffer.getvalue()) / 1e3:,.0f} KB PNG, peak {results[name]['peak_mib']:,.0f} MiB "
                  f"(+{results[name]['extra_mib']:,.0f} MiB over the loaded model)"
                  + (f"; refused: {measured['error']}" if measured["error"] else ""))  # fmt: skip
    return results


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rows, dimension = (20_000, 64) if args.toy else (1_000_000, DIMENSION)
    result = {
        "setting": f"checksums: {rows:,} random unit vectors of {dimension} per FAISS file, warm page cache, "
        f"median of {REPEATS} interleaved runs; requests: one fresh process each, peak RSS (VmHWM)",
        "requests": request_memory(args.toy),
        "checksum": {"rows": rows, "dimension": dimension, "types": checksum_cost(rows, dimension)},
    }
    write_result("hostile_input", result, args.output)


# ---------------------------------------------------------------- its section of BENCHMARKS.md
TARGETS_OF_AN_INDEX = 5  # the global embedding and four entities: one FAISS file each, all of one size


def render(result: dict) -> list[str]:
    checksum = result["checksum"]
    checks = [[kind, f"{values['bytes'] / 1e6:,.0f}", f"{values['read_index_s']:.2f}", f"{values['sha256_s']:.2f}",
               f"{values['checksum_over_read']:.2f}x", f"{values['sha256_mb_per_s']:,.0f}",
               f"{TARGETS_OF_AN_INDEX * values['sha256_s']:.1f}"]
              for kind, values in checksum["types"].items()]  # fmt: skip
    requests = [[name, f"{values['png_bytes'] / 1e3:,.0f}", f"{values['peak_mib']:,.0f}", f"{values['extra_mib']:,.0f}",
                 "refused" if values["refused"] else "served"]
                for name, values in result["requests"].items()]  # fmt: skip
    return [
        "## 10. Hostile input: what the defences cost",
        "",
        f"Setting: {result['setting']}.",
        "",
        f"Checking each FAISS file's SHA-256 before FAISS parses it, at {checksum['rows']:,} rows of "
        f"{checksum['dimension']} (baseline: `faiss.read_index` of the same file, which an open pays anyway):",
        "",
        *table(
            [
                "type",
                "file MB",
                "read_index s",
                "SHA-256 s",
                "checksum / read",
                "SHA-256 MB/s",
                f"added to an index's first search, {TARGETS_OF_AN_INDEX} targets, s",
            ],
            checks,
        ),
        "",
        "Peak memory of one endpoint request with the default limits (a fresh process per request; "
        "'extra' is above the peak of loading the model):",
        "",
        *table(["request", "PNG KB", "peak MiB", "extra MiB", "outcome"], requests),
        "",
    ]


if __name__ == "__main__":
    main()
