"""Benchmark 2: one training step (forward + backward + AdamW) of E2 vs CLIP fine-tuning.

ViT-B/32 sizes, random weights, batch 32, float32 on the CPU, realistic inputs: long product
descriptions (truncated to 77 tokens) and short, repeating tags (4 entities). Three sides, run
interleaved:
- `clip_ft`: transformers `CLIPModel(..., return_loss=True)`;
- `e2`: E2 with both losses (tags deduplicated, padded to the longest tag of the batch);
- `e2_reference_tags`: E2 with the reference's tag handling (every tag padded to 77 tokens and
  encoded separately, no deduplication).
Target: E2 at most 1.35x CLIP-FT.

    python benchmarks/bench_train_step.py
"""

import sys
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TOY_FUSION_LAYERS, TOY_TEXT, TOY_VISION, interleaved, parser, write_result  # noqa: E402
from report import heading, timing_table, verdict  # noqa: E402

from e2_hf import E2CLIPConfig, E2CLIPModel, E2CLIPProcessor, build_product_text  # noqa: E402
from e2_hf.modeling import clip_image_processor  # noqa: E402
from e2_hf.modeling.loss_e2clip import region_contrastive_loss  # noqa: E402
from e2_hf.synthetic import COMPOSITIONS, EXTRAS, SEASONS, SILHOUETTES, brand_names  # noqa: E402

TARGET = 1.35
BPE = Path(__file__).resolve().parents[2] / "shared" / "data" / "bpe_simple_vocab_16e6.txt.gz"


def tokenizer(folder: Path, toy: bool):
    """CLIP's real tokenizer when ../shared has its BPE list; else one learned from the texts."""
    from e2_hf.tokenization import build_clip_tokenizer, build_tokenizer_from_texts

    if BPE.exists() and not toy:
        return build_clip_tokenizer(BPE, folder), "CLIP BPE (49,408 ids)"
    texts = [" ".join(EXTRAS)] + list(COMPOSITIONS) + list(SEASONS) + brand_names()
    return build_tokenizer_from_texts(texts, folder, 300), "BPE learned from the benchmark texts"


def product_batch(batch: int, rng: np.random.Generator) -> tuple[list[str], list[dict[str, str]]]:
    """Long descriptions; tags drawn from small vocabularies, so they repeat inside a batch."""
    brands, subcategories = brand_names()[:12], list(SILHOUETTES)
    tags, texts = [], []
    for _ in range(batch):
        tag = {
            "brand": str(rng.choice(brands)),
            "season": str(rng.choice(SEASONS)),
            "subcategory": str(rng.choice(subcategories)),
            "composition": str(rng.choice(COMPOSITIONS)),
        }
        description = " ".join(rng.choice(EXTRAS, size=12)) + " Long-sleeve shirt with a pointed collar and cuffs."
        tags.append(tag)
        texts.append(build_product_text(description, tag))
    return texts, tags


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    import tempfile

    folder = Path(tempfile.mkdtemp())
    tok, tokenizer_name = tokenizer(folder, args.toy)
    if args.toy:
        vision, text = TOY_VISION, TOY_TEXT
        fusion, projection, batch, repeats = TOY_FUSION_LAYERS, 16, 8, 2
    else:
        vision, text, fusion, projection, batch, repeats = {}, {}, [7, 10], 512, 32, 5
    text = {
        **text,
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    e2_config = E2CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection, fusion_layers=fusion)
    clip_config = CLIPConfig(
        text_config=e2_config.text_config.to_dict(),
        vision_config=e2_config.vision_config.to_dict(),
        projection_dim=projection,
    )
    processor = E2CLIPProcessor(
        clip_image_processor(e2_config.vision_config.image_size), tok, entities=e2_config.entities
    )
    texts, tags = product_batch(batch, np.random.default_rng(0))
    size = e2_config.vision_config.image_size
    inputs = processor(text=texts, tags=tags)
    inputs["pixel_values"] = torch.randn(batch, 3, size, size)
    flat_tags = [tag[entity] for tag in tags for entity in e2_config.entities]
    padded = tok(flat_tags, padding="max_length", max_length=77, truncation=True, return_tensors="pt")

    torch.manual_seed(0)
    clip = CLIPModel(clip_config).train()
    e2 = E2CLIPModel(e2_config).train()
    e2_reference = E2CLIPModel(e2_config).train()
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=1e-6)
        for name, model in (("clip_ft", clip), ("e2", e2), ("e2_reference_tags", e2_reference))
    }

    def step(name, loss_fn):
        def call():
            loss = loss_fn()
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad()

        return call

    def clip_loss():
        return clip(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            return_loss=True,
        ).loss

    def e2_loss():
        return e2(**inputs, return_loss=True).loss

    def e2_reference_loss():  # every tag padded to 77 tokens and encoded on its own row
        outputs = e2_reference(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            return_loss=True,
        )
        tag_embeds, _ = e2_reference._text_embeds(padded["input_ids"], padded["attention_mask"])
        tag_embeds = tag_embeds.view(batch, len(e2_config.entities), -1)
        present = torch.ones(batch, len(e2_config.entities), dtype=torch.bool)
        region = region_contrastive_loss(outputs.region_embeds, tag_embeds, present, e2_reference.logit_scale.exp())
        return 0.5 * outputs.global_loss + 0.5 * region

    timings = interleaved(
        {
            "clip_ft": step("clip_ft", clip_loss),
            "e2": step("e2", e2_loss),
            "e2_reference_tags": step("e2_reference_tags", e2_reference_loss),
        },
        repeats=repeats,
    )
    ratio = timings["e2"]["median_s"] / timings["clip_ft"]["median_s"]
    reference_ratio = timings["e2_reference_tags"]["median_s"] / timings["clip_ft"]["median_s"]
    distinct = len(set(flat_tags))
    print(f"E2 / CLIP-FT step: {ratio:.3f}x (target <= {TARGET}x); reference tag handling: {reference_ratio:.3f}x")
    write_result(
        "train_step",
        {
            "setting": f"forward + backward + AdamW, batch {batch}, float32, CPU, {'toy' if args.toy else 'ViT-B/32'} "
            f"sizes, random weights, tokenizer: {tokenizer_name}, {repeats} interleaved runs after a warm-up",
            "product_text_tokens": int(inputs["attention_mask"].sum(1).float().mean()),
            "tags": len(flat_tags),
            "distinct_tags": distinct,
            "tag_tokens_padded_to": int(inputs["tag_input_ids"].shape[-1]),
            "timings": timings,
            "ratio_e2_over_clip_ft": ratio,
            "ratio_reference_tags_over_clip_ft": reference_ratio,
            "target_max_ratio": TARGET,
            "target_met": ratio <= TARGET,
        },
        args.output,
    )


# ---------------------------------------------------------------- its section of BENCHMARKS.md
def render(result: dict) -> list[str]:
    setting = (
        f"{result['setting']}. Product texts average {result['product_text_tokens']} tokens; {result['tags']} tags "
        f"per batch, {result['distinct_tags']} distinct, padded to {result['tag_tokens_padded_to']} tokens "
        "(the reference pads to 77)"
    )
    return [
        *heading("2. One training step: E2 vs CLIP fine-tuning", setting),
        *timing_table(result),
        "",
        f"E2 / CLIP-FT = **{result['ratio_e2_over_clip_ft']:.3f}x** (target <= {result['target_max_ratio']}x): "
        f"{verdict(result)}. With the reference's tag handling (every tag padded to 77 tokens, no deduplication) "
        f"E2 costs {result['ratio_reference_tags_over_clip_ft']:.3f}x.",
        "",
    ]


if __name__ == "__main__":
    main()
