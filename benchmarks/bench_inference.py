"""Benchmark 1: E2 `get_image_features` vs transformers `CLIPModel.get_image_features`.

ViT-B/32 sizes, random weights, batch 32, float32 on the CPU; the two sides run interleaved.
Target: E2 costs at most 1.10x CLIP. Also the parameters E2 adds and their share of CLIP's.

    python benchmarks/bench_inference.py
"""

import sys
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TOY_FUSION_LAYERS, TOY_TEXT, TOY_VISION, interleaved, parser, write_result  # noqa: E402
from report import heading, timing_table, verdict  # noqa: E402

from e2_hf import E2CLIPConfig, E2CLIPModel  # noqa: E402
from e2_hf.parameters import count_new_parameters  # noqa: E402

TARGET = 1.10


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.toy:
        vision, text = TOY_VISION, TOY_TEXT
        e2_config = E2CLIPConfig(
            text_config=text, vision_config=vision, projection_dim=16, fusion_layers=TOY_FUSION_LAYERS
        )
        batch, repeats = 4, 2
    else:
        e2_config, batch, repeats = E2CLIPConfig(), 32, 7
    clip_config = CLIPConfig(
        text_config=e2_config.text_config.to_dict(),
        vision_config=e2_config.vision_config.to_dict(),
        projection_dim=e2_config.projection_dim,
    )
    torch.manual_seed(0)
    clip = CLIPModel(clip_config).eval()
    e2 = E2CLIPModel(e2_config).eval()
    size = e2_config.vision_config.image_size
    pixel_values = torch.randn(batch, 3, size, size)

    def run(model):
        def call():
            with torch.no_grad():
                return model.get_image_features(pixel_values=pixel_values)

        return call

    timings = interleaved({"clip": run(clip), "e2": run(e2)}, repeats=repeats)
    ratio = timings["e2"]["median_s"] / timings["clip"]["median_s"]
    report = count_new_parameters(e2)
    print(f"E2 / CLIP image features: {ratio:.3f}x (target <= {TARGET}x)")
    write_result(
        "inference",
        {
            "setting": f"get_image_features, batch {batch}, float32, CPU, {'toy' if args.toy else 'ViT-B/32'} sizes, "
            f"random weights, {repeats} interleaved runs after a warm-up",
            "timings": timings,
            "ratio_e2_over_clip": ratio,
            "target_max_ratio": TARGET,
            "target_met": ratio <= TARGET,
            "parameters": report.as_dict(),
            "paper_share_of_clip": 0.019,
        },
        args.output,
    )


# ---------------------------------------------------------------- its section of BENCHMARKS.md
def render(result: dict) -> list[str]:
    parameters = result["parameters"]
    return [
        *heading("1. Inference: E2 vs CLIP image features", result["setting"]),
        *timing_table(result),
        "",
        f"E2 / CLIP = **{result['ratio_e2_over_clip']:.3f}x** (target <= {result['target_max_ratio']}x): "
        f"{verdict(result)}.",
        "",
        f"Parameters: CLIP {parameters['clip_parameters']:,}; E2 adds {parameters['e2_new_parameters']:,} = "
        f"{100 * parameters['share_of_clip']:.2f}% of CLIP's "
        f"(the paper says {100 * result['paper_share_of_clip']:.1f}%); "
        f"selection tokens {parameters['new_by_group']['selection_tokens']:,}, fusion blocks "
        f"{parameters['new_by_group']['fusion_blocks']:,}, entity norms and projections "
        f"{parameters['new_by_group']['region_head']:,}.",
        "",
    ]


if __name__ == "__main__":
    main()
