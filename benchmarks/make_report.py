"""Writes BENCHMARKS.md from the JSON files in benchmarks/results/ (no hand-typed numbers).

python benchmarks/make_report.py
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(result: dict) -> str:
    return "**met**" if result["target_met"] else "**missed**"


def heading(title: str, setting: str) -> list[str]:
    return [f"## {title}", "", f"Setting: {setting}.", ""]


def table(headers: list[str], rows: list[list[str]], first_column_numeric: bool = False) -> list[str]:
    """A Markdown table; the first column left-aligned unless numeric, the others right-aligned."""
    alignment = ["---:" if first_column_numeric else "---"] + ["---:"] * (len(headers) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in (headers, alignment, *rows)]


def timing_table(result: dict) -> list[str]:
    rows = [[side, f"{row['median_s']:.3f}", f"{row['min_s']:.3f}"] for side, row in result["timings"].items()]
    return table(["side", "median s", "min s"], rows)


def inference_section(result: dict) -> list[str]:
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


def train_step_section(result: dict) -> list[str]:
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


def retrieval_section(result: dict) -> list[str]:
    headers = ["N", "ours s", "bare N x N x d product s", "per-query sort loop s (scaled)", "speed-up", "ours / bare"]
    rows = [
        [
            f"{int(size):,}",
            f"{row['ours_s']:.1f}",
            f"{row['bare_matmul_s']:.1f}",
            f"{row['sort_loop_s_scaled']:.0f} ({row['sort_loop_queries_timed']} queries timed)",
            f"{row['speedup_over_sort_loop']:.0f}x",
            f"{row['ours_over_bare_matmul']:.2f}x",
        ]  # fmt: skip
        for size, row in result["sizes"].items()
    ]
    return [
        *heading("3. Full-candidate retrieval metrics", result["setting"]),
        *table(headers, rows, first_column_numeric=True),
        "",
        f"Target: at least {result['target_min_speedup_at_32528']:.0f}x faster than the loop at N = 32,528: "
        f"{verdict(result)}.",
        "",
        *profile_lines(result),
    ]


RANKING_COST_GOAL = 1.1  # the counting on top of the N x N x d product


def profile_lines(result: dict) -> list[str]:
    """Where our time goes: the product itself, and counting ranks on top of it, eager and compiled."""
    names = {"eager_counting": "eager", "compiled_counting": "compiled"}
    lines = []
    for size, row in result["sizes"].items():
        seconds = {side: timing["median_s"] for side, timing in row["timings"].items()}
        lines.append(
            f"- N = {int(size):,}: the bare product takes {row['bare_matmul_s']:.1f} s (row blocks "
            f"{seconds['bare_matmul_rows']:.1f} s, our tiles {seconds['bare_matmul_tiles']:.1f} s); "
            f"ranking with eager counting {seconds['eager_counting']:.1f} s "
            f"({row['eager_counting_over_bare_matmul']:.2f}x), with compiled counting "
            f"{seconds['compiled_counting']:.1f} s ({row['compiled_counting_over_bare_matmul']:.2f}x); "
            f"the default at this N counts {names[row['default_counting']]}. The compiled count alone, of a tile "
            f"kept in cache, takes {seconds['compiled_counting_in_cache']:.1f} s: product plus counting without "
            f"reading the tiles back from memory is {row['floor_over_bare_matmul']:.2f}x."
        )
    compiling = result["compile_first_call"]
    compile_time = (
        f"{compiling['empty_cache_s']:.1f} s with an empty torch.compile cache (the first run on a machine), "
        f"{compiling['warm_cache_s']:.1f} s with a warm one"
        if compiling
        else "not measured in a --toy run"
    )
    lines += [
        f"- Compiling the fused counting, once per process: {compile_time}; not in the timings above. "
        f"The default compiles from N = {result['compile_counting_from']:,}.",
    ]
    ratios = ", ".join(
        f"{row['ours_over_bare_matmul']:.2f}x at N = {int(size):,}" for size, row in result["sizes"].items()
    )
    met = all(row["ours_over_bare_matmul"] <= RANKING_COST_GOAL for row in result["sizes"].values())
    lines += [
        "",
        f"Goal: ranking (the default counting) costs at most {RANKING_COST_GOAL}x the bare product: {ratios}: "
        f"**{'met' if met else 'missed'}**.",
    ]
    if not met:
        floor = max(row["floor_over_bare_matmul"] for row in result["sizes"].values())
        spread = max(max(side["runs"]) / min(side["runs"]) - 1 for row in result["sizes"].values()
                     for side in row["timings"].values())  # fmt: skip
        lines += [
            "",
            f"What remains: counting itself costs at most {floor:.2f}x with the compiled kernel (a tile in "
            "cache); the rest is handing each freshly computed tile from the matrix product to the counting "
            "kernel. Only a matrix product that counts as it writes its output (the count fused into its "
            "epilogue) would remove it, and PyTorch's CPU product offers none. The runs of one side on this "
            f"shared 2-core machine differ by up to {100 * spread:.0f}%, more than the goal's margin.",
        ]
    return lines + [""]


def quality_section(result: dict) -> list[str]:
    summary = result["summary"]
    names = {"e2_paper": "E2, the paper's recipe", "e2_demo": "E2, the demo's options", "clip_ft": "CLIP-FT"}
    models = [key for key in names if key in summary]
    entities = ("brand", "season", "subcategory", "composition")

    def spread(value: dict, scale: float = 1.0) -> str:
        return f"{scale * value['mean']:.1f} ± {scale * value['std']:.1f}"

    retrieval_rows = [
        [names[key], spread(summary[key]["full"]), spread(summary[key]["sample100"]),
         *(spread(summary[key]["linear_probe"][entity]) for entity in entities)]
        for key in models
    ]  # fmt: skip
    tagging_rows = []
    for key in models:
        tagging = summary[key]["tagging"]
        sources = ("region", "global") if "region" in tagging["brand"] else ("global",)
        for source in sources:
            tagging_rows.append([f"{names[key]}, {source}", *(spread(tagging[entity][source]) for entity in entities)])
    tagging_rows.append(
        ["chance", *(f"{summary[models[0]]['tagging'][entity]['chance']['mean']:.1f}" for entity in entities)]
    )
    selection_rows = []
    for key in models:
        for entity, row in summary[key].get("selection", {}).items():
            follow = row.get("follow_moved_logo_if_hit")
            selection_rows.append([
                names[key], entity, spread(row["hit"], 100), spread(row["chance"], 100),
                spread(row["position_only"], 100), spread(row["best_token_hit"], 100), spread(row["collapse"], 100),
                spread(follow, 100) if follow else "",
            ])  # fmt: skip
    goal_rows = []
    for goal, value in summary["goals"].items():
        if "target" in value:
            goal_rows.append([goal, f"{value['value']:.2f}x", f"{value['target']:.0f}x",
                              "met" if value["met"] else "missed"])  # fmt: skip
        else:
            goal_rows.append([goal, f"{value['mean_difference']:+.1f} (std {value['std_difference']:.1f})",
                              "> 2 std", "met" if value["met"] else "missed"])  # fmt: skip
    seed_rows = []
    for seed, run in enumerate(result["per_seed"]):
        for key in ("e2_paper", "e2_demo"):
            brand, season = run[key]["selection"]["brand"], run[key]["selection"]["season"]
            found = brand["hit"] >= 3 * brand["chance"] and brand["hit"] >= 2 * brand["position_only"]
            follow = brand.get("logo_moved", {}).get("follow_if_hit")
            seed_rows.append([
                str(seed), names[key], f"{100 * brand['hit']:.1f}", f"{100 * brand['chance']:.1f}",
                f"{100 * brand['position_only']:.1f}", "" if follow is None else f"{100 * follow:.0f}",
                f"{100 * season['hit']:.1f} / {100 * season['position_only']:.1f}",
                "yes" if found else "no", f"{run[key]['tagging']['brand']['region']:.1f}",
                f"{run[key]['full']['sumr']:.1f}", f"{run['clip_ft']['full']['sumr']:.1f}",
            ])  # fmt: skip
    return [
        *heading("4. Quality and selection on the demo's synthetic catalog (--hard)", result["setting"]),
        *table(
            [
                "model",
                "full SumR",
                "sample-100 SumR",
                "probe brand",
                "probe season",
                "probe sub-category",
                "probe composition",
            ],
            retrieval_rows,
        ),  # fmt: skip
        "",
        "Zero-shot tagging of the validation products per entity (top-1 accuracy in percent; candidates: the "
        "entity's distinct validation tags; `region`: the entity's regional embedding, `global`: the image "
        "embedding):",
        "",
        *table(["model, embedding", *entities], tagging_rows),
        "",
        "Where E2's selection tokens look, last fusion block, in percent of validation views (mean over the "
        "entity's tokens): `hit` a patch holding the entity's detail (brand: the logo, season: the trim band), "
        "`chance` a uniformly random patch, `position-only` the token's own choice frequencies ignoring the image, "
        "`collapse` the share of its most frequent patch, `follows` the share of brand tokens on the logo that "
        "are on it again after the logo is moved elsewhere on the garment:",
        "",
        *table(
            ["model", "entity", "hit", "chance", "position-only", "best token", "collapse", "follows"], selection_rows
        ),  # fmt: skip
        "",
        "Per seed (brand: hit, chance and position-only in percent, `follows` as above; `found`: at least 3x "
        "chance and 2x position-only in that seed):",
        "",
        *table(
            [
                "seed",
                "model",
                "brand hit",
                "chance",
                "position-only",
                "follows",
                "season hit / position-only",
                "found",
                "brand tagging",
                "SumR",
                "CLIP-FT SumR",
            ],
            seed_rows,
        ),  # fmt: skip
        "",
        "The goals (E2 with the demo's options, means over seeds; differences per seed against CLIP-FT):",
        "",
        *table(["goal", "reached", "target", ""], goal_rows),
        "",
        "Mean ± standard deviation over seeds; linear-probe accuracies in percent on frozen global image "
        "embeddings (80/20 split of the validation products).",
        "",
    ]


def data_section(result: dict) -> list[str]:
    headers = ["dataloader workers", "images / s", "per worker", "GPU steps / s it feeds (batch 64)"]
    rows = [
        [
            workers,
            f"{row['images_per_s']:.0f}",
            f"{row['images_per_s_per_worker']:.0f}",
            f"{row['feeds_gpu_steps_per_s_at_batch_64']:.2f}",
        ]  # fmt: skip
        for workers, row in result["workers"].items()
    ]
    return [*heading("5. Data pipeline", result["setting"]), *table(headers, rows, first_column_numeric=True), ""]


def tagging_section(result: dict) -> list[str]:
    models = ("e2_region", "e2_global", "clip_ft_global")
    per_entity, mean = result["per_entity"], result["mean"]
    accuracy_rows = [
        [entity, str(row["candidates"]), *(f"{row[model]:.1f}" for model in (*models, "chance"))]
        for entity, row in per_entity.items()
    ]
    accuracy_rows.append(["mean", "", *(f"{mean[model]:.1f}" for model in (*models, "chance"))])
    search_rows = [
        [entity, *(f"{row['search_precision_at_10'][model]:.1f}" for model in models)]
        for entity, row in per_entity.items()
    ]
    search_mean = result["mean_search_precision_at_10"]
    search_rows.append(["mean", *(f"{search_mean[model]:.1f}" for model in models)])
    return [
        *heading("6. Zero-shot tagging and entity-aware search: regional vs global embedding", result["setting"]),
        *table(["entity", "candidates", "E2 regional", "E2 global", "CLIP-FT global", "chance"], accuracy_rows),
        "",
        f"Top-1 accuracy in percent. E2 regional / E2 global (mean): {result['ratio_region_over_global']:.2f}x.",
        "",
        "Entity-aware search with the same embeddings: each tag text as a query, the share of its 10 best "
        "products (fewer when fewer carry the tag) that carry it, mean over the tags, in percent.",
        "",
        *table(["entity", "E2 regional", "E2 global", "CLIP-FT global"], search_rows),
        "",
    ]


def selection_experiments_section(result: dict) -> list[str]:
    """One row per run: where the brand and season tokens look, brand tagging, SumR."""

    def percent(value: float) -> str:
        return f"{100 * value:.1f}"

    rows = []
    for run in sorted(result["runs"], key=lambda run: (run["testbed"], run["recipe"], run["seed"])):
        e2 = run["e2"]
        brand = e2["selection"]["entities"]["brand"]["blocks"][-1]
        season = e2["selection"]["entities"]["season"]["blocks"][-1]
        clip_ft = run.get("clip_ft")
        rows.append([
            run["testbed"], run["recipe"], str(run["seed"]),
            f"{percent(brand['hit'])} / {percent(brand['chance'])} / {percent(brand['position_only'])}",
            percent(brand["best_token_hit"]),
            f"{percent(season['hit'])} / {percent(season['position_only'])}",
            f"{e2['tagging']['brand']['region']:.1f} ({e2['tagging']['brand']['chance']:.1f})",
            f"{e2['sumr']:.1f}",
            f"{clip_ft['sumr']:.1f}" if clip_ft else "",
            f"{clip_ft['tagging']['brand']['global']:.1f}" if clip_ft else "",
        ])  # fmt: skip
    headers = ["test bed", "recipe", "seed", "brand hit / chance / position-only", "best brand token",
               "season hit / position-only", "brand tagging, regional (chance)", "E2 SumR", "CLIP-FT SumR",
               "CLIP-FT brand tagging"]  # fmt: skip
    return [
        *heading("Making the regions real: selection experiments", result["setting"]),
        "Last fusion block; hit rates in percent of validation views, mean over the entity's tokens. Test beds "
        "and recipes are defined in `benchmarks/selection_experiments.py`; what they show is discussed below "
        "the table.",
        "",
        *table(headers, rows),
        "",
        *regions_discussion(result["runs"]),
    ]


def regions_discussion(runs: list[dict]) -> list[str]:
    """What the experiments show, each number read from the runs (a sentence is left out when its
    run is missing)."""
    by_key = {(run["testbed"], run["recipe"], run["seed"]): run for run in runs}

    def brand(key, field="hit"):
        return 100 * by_key[key]["e2"]["selection"]["entities"]["brand"]["blocks"][-1][field]

    def season(key, field="hit"):
        return 100 * by_key[key]["e2"]["selection"]["entities"]["season"]["blocks"][-1][field]

    def tagging(key, model="e2", source="region"):
        return by_key[key][model]["tagging"]["brand"][source]

    def follows(key):
        moved = by_key[key]["e2"]["selection"]["interventions"].get("logo_moved", {})
        return 100 * moved.get("entities", {}).get("brand", [{}])[-1].get("follow_if_hit", float("nan"))

    def cosine(key):
        return by_key[key]["e2"].get("tag_text_cosine", {}).get("brand")

    v01, palette = ("v0.1", "paper", 0), ("grid8_b12_palette", "multi_positive", 0)
    paper, multi = ("grid8_b12_palette", "pretrained_paper", 0), ("grid8_b12_palette", "pretrained_mp", 0)
    isolated = ("grid8_b12_palette", "pretrained_mp_isolated", 0)
    isolated_clip, random_isolated = (
        ("grid8_b12_palette", "pretrained_isolated", 0),
        ("grid8_b12_palette", "mp_isolated", 0),
    )
    lines = ["What the runs show (seed 0 each; benchmark 4 repeats the chosen recipe over three seeds):", ""]
    if v01 in by_key:
        text = (
            f"- **From random weights the brand is never learned.** On the 0.1 test bed the brand tokens hit the "
            f"logo in {brand(v01):.1f}% of views (chance {brand(v01, 'chance'):.1f}%, position-only "
            f"{brand(v01, 'position_only'):.1f}%) and brand tagging is at chance ({tagging(v01):.1f}%)."
        )
        if cosine(v01) is not None:
            text += (
                f" The brand tag texts end up as one embedding (mean pairwise cosine {cosine(v01):.3f}): with an "
                "image side that cannot tell brands apart, collapsing them is what minimises the region loss."
            )
        if by_key[v01].get("clip_ft"):
            text += (
                f" E2's SumR is still far ahead of CLIP-FT's there ({by_key[v01]['e2']['sumr']:.1f} against "
                f"{by_key[v01]['clip_ft']['sumr']:.1f}), so that lead does not come from regions that find the logo."
            )
        lines.append(text)
    if palette in by_key:
        lines.append(
            f"- **A learnable test bed is not enough.** With 12 brands in well separated colours, 8 px patches and "
            f"varied framing, the global embedding learns the brand (E2 SumR {by_key[palette]['e2']['sumr']:.1f}) "
            f"but the brand tokens still avoid the logo ({brand(palette):.1f}% against chance "
            f"{brand(palette, 'chance'):.1f}%) and brand tagging stays at chance ({tagging(palette):.1f}%)."
        )
    if paper in by_key:
        lines.append(
            f"- **A pretrained start makes the brand learnable.** From the small CLIP pretrained on a generic "
            f"catalog with alt-text captions (`benchmarks/pretrain_small_clip.py`), the paper's recipe reaches "
            f"{tagging(paper):.1f}% brand tagging with the brand region (CLIP-FT's global embedding: "
            f"{tagging(paper, 'clip_ft', 'global'):.1f}%, chance {tagging(paper, 'e2', 'chance'):.1f}%). But the brand "
            f"tokens still do not look at the logo ({brand(paper):.1f}% of views, chance "
            f"{brand(paper, 'chance'):.1f}%). The brand reaches them anyway: with the paper's full attention they "
            f"attend to every patch in the layers before the fusion blocks, so choosing the logo adds nothing "
            f"they lack."
        )
    if multi in by_key:
        lines.append(
            f"- `multi_positive` alone changes little: brand tagging {tagging(multi):.1f}%, logo hits "
            f"{brand(multi):.1f}%."
        )
    if isolated in by_key:
        lines.append(
            f'- **Isolated selection tokens find the logo.** With `selection_attention="isolated"` the tokens '
            f"see the image only through the patch each one chooses. The brand tokens then hit the logo in "
            f"{brand(isolated):.1f}% of views ({brand(isolated) / brand(isolated, 'chance'):.1f}x chance, "
            f"{brand(isolated) / brand(isolated, 'position_only'):.1f}x their position-only rate), and "
            f"{follows(isolated):.0f}% of those on the logo follow it when it moves. The season tokens hit the "
            f"trim in {season(isolated):.1f}% against a position-only {season(isolated, 'position_only'):.1f}%, "
            f"and brand tagging rises to {tagging(isolated):.1f}%."
        )
    if isolated_clip in by_key:
        lines.append(
            f"- With the paper's `clip` region loss instead of `multi_positive`, isolated tokens hit the logo in "
            f"{brand(isolated_clip):.1f}% of views (brand tagging {tagging(isolated_clip):.1f}%)."
        )
    if random_isolated in by_key:
        lines.append(
            f"- From random weights, isolation alone does not do it: {brand(random_isolated):.1f}% logo hits, "
            f"brand tagging {tagging(random_isolated):.1f}%. It takes both: a backbone that knows brands, and "
            f"tokens that can only learn them through their choice."
        )
    warm = [key for key in (("grid8_b12_palette", "pretrained_mp_isolated_warm4", seed) for seed in (0, 1, 2))
            if key in by_key]  # fmt: skip
    if len(warm) >= 2:
        per_seed = ", ".join(f"{brand(key):.1f}% (seed {key[2]})" for key in warm)
        seasons = ", ".join(
            f"{season(key):.1f}% against {season(key, 'position_only'):.1f}% (seed {key[2]})" for key in warm
        )
        found = sum(brand(key) >= 3 * brand(key, "chance") and brand(key) >= 2 * brand(key, "position_only")
                    for key in warm)  # fmt: skip
        lines.append(
            f"- **A longer stage 1: the brand tokens find the logo in {found} of {len(warm)} seeds.** "
            f"With 2 of the 20 epochs in stage 1 the demo's recipe had found the logo in two seeds of three (in "
            f"seed 2 the tokens avoided the logo and the trim). With 4 (only E2's parts train while the backbone "
            f"keeps its pretrained features), the brand tokens hit the logo in {per_seed}. The season tokens' trim "
            f"hits against their position-only rate: {seasons}. The demo and benchmark 4 now use 4+16 epochs."
        )
    compared = [key for key in (v01, ("grid8_b12", "multi_positive", 0), ("grid8_b12_palette", "pretrained_paper", 0))
                if key in by_key and "clip_ft" in by_key[key]]  # fmt: skip
    if len(compared) >= 2:
        pairs = "; ".join(
            f"{by_key[key]['e2']['sumr']:.1f} against {by_key[key]['clip_ft']['sumr']:.1f} ({key[0]}, {key[1]})"
            for key in compared
        )
        lines.append(
            f"- **Retrieval gains where the backbone has room.** E2's full-candidate SumR against CLIP-FT's on the "
            f"same data and budget: {pairs}. From random weights E2 is far ahead; from the pretrained start both "
            f"are near the 600 ceiling and E2 is not ahead (benchmark 4 repeats this over three seeds)."
        )
    gradient_runs = [run for run in runs if "gradients" in run["e2"]]
    if gradient_runs:

        def smallest(names):
            return min(run["e2"]["gradients"][f"fusion{block}.{name}"]["region_loss"]
                       for run in gradient_runs for block in (0, 1) for name in names)  # fmt: skip

        lines.append(
            f"- The query and key projections of the fusion blocks do get gradient through the straight-through "
            f"Gumbel-softmax: on a training batch of each trained model, the region loss's gradient is at least "
            f"{smallest(('q_proj', 'k_proj')):.1e} of their weights' norm (value projections: at least "
            f"{smallest(('v_proj',)):.1e}; `e2.gradients` in the JSON)."
        )
    return [*lines, ""]


def real_catalog_section(result: dict) -> list[str]:
    """Token lengths with the HTML kept and cleaned, multi-value labels, what the centre crop removes."""
    headers = ["texts", "text", "median tokens", "longest", "truncated at 77", "median tokens cut"]
    rows = []
    for reading, kinds in result["texts"].items():
        for kind, row in kinds.items():
            rows.append([reading.replace("_", " "), kind.replace("_", " "), f"{row['median_tokens']:g}",
                         str(row["max_tokens"]), f"{row['truncated']} of {row['texts']}",
                         str(row["median_tokens_cut"])])  # fmt: skip
    label_rows = [[entity, str(row["one_label_each"]), str(row["values"]), str(row["products_with_several_values"])]
                  for entity, row in result["multi_value_labels"].items()]  # fmt: skip
    crop = result["centre_crop"]
    return [
        *heading("A real catalog export: texts, multi-value tags, photo framing", result["setting"]),
        *table(headers, rows),
        "",
        *table(
            [
                "entity",
                "distinct labels, one per product",
                "distinct values (--tag-separator)",
                "products with several values",
            ],
            label_rows,
        ),  # fmt: skip
        "",
        f"Entities without any tag: {', '.join(result['untagged_entities']) or 'none'}. CLIP's square centre crop "
        f"removes {100 * crop['removed_share_median']:.1f}% (median; at most {100 * crop['removed_share_max']:.1f}%) "
        f"of each of the {crop['photos']} photos ({', '.join(crop['sizes'])}): the top and bottom of a portrait shot.",
        "",
    ]


def framing_section(result: dict) -> list[str]:
    """Portrait photos with CLIP's centre crop vs letterboxed (`pad`): retrieval, tagging, selection."""
    entities = list(result["crop"]["tagging"])
    headers = ["framing", "SumR", "R@1 image->text", "R@1 text->image",
               *(f"{entity} tagging (region)" for entity in entities), "brand logo hit / chance"]  # fmt: skip
    rows = []
    for image_fit in ("crop", "pad"):
        report = result[image_fit]
        full = report["full"]
        logo = logo_summary(report.get("selection", {}))
        rows.append([image_fit, f"{full['sumr']:.1f}", f"{full['image_to_text']['R@1']:.1f}",
                     f"{full['text_to_image']['R@1']:.1f}",
                     *(f"{report['tagging'][entity]['region']:.1f}" for entity in entities), logo])  # fmt: skip
    catalog = result["catalog"]
    difference = result["pad_minus_crop"]
    return [
        *heading("Framing portrait photos: crop vs pad", result["setting"]),
        f"{catalog['detail_boxes_partly_cut_by_crop']} of the {catalog['detail_boxes']} detail boxes (logos, trims, "
        "...) reach into the rows the centre crop removes.",
        "",
        *table(headers, rows),
        "",
        f"pad minus crop: SumR {difference['sumr']:+.1f}; region tagging "
        + ", ".join(f"{entity} {value:+.1f}" for entity, value in difference["tagging_region"].items())
        + " points (one seed).",
        "",
    ]


SERVING_SIDES = {
    "pytorch_eager": "PyTorch eager (fp32)",
    "pytorch_compile": "PyTorch torch.compile",
    "onnxruntime_fp32": "ONNX Runtime fp32",
    "onnxruntime_int8": "ONNX Runtime int8",
}


def serving_section(result: dict) -> list[str]:
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


SEARCH_SIDES = {"brute_force": "brute force (0.1)", "flat": "FAISS flat (exact)", "hnsw": "FAISS HNSW",
                "ivfpq": "FAISS IVF-PQ + refine", "flat_float16": "flat, float16 storage",
                "flat_bfloat16": "flat, bfloat16 storage", "hnsw_float16": "HNSW, float16 storage",
                "hnsw_bfloat16": "HNSW, bfloat16 storage"}  # fmt: skip


def brute_force_seconds(measured: dict) -> float:
    """Brute force's batch-1 p50 seconds on the first measured target."""
    return measured["targets"][measured["targets_measured"][0]]["brute_force"]["batch_1"]["p50_s"]


def search_scale_section(result: dict) -> list[str]:
    headers = ["rows", "side", "build s", "memory MB", "batch 1 p50 / p99 ms", "batch 64 p50 / p99 ms",
               "recall@10", "speed-up at batch 1"]  # fmt: skip
    rows = []
    for size, measured in result["sizes"].items():
        first = measured["targets"][measured["targets_measured"][0]]
        for side, name in SEARCH_SIDES.items():
            if side not in first:
                continue
            values, summary = first[side], measured["summary"][side]
            rows.append([f"{int(size):,}", name, f"{values['build_s']:.1f}", f"{values['memory_bytes'] / 1e6:,.0f}",
                         f"{1000 * values['batch_1']['p50_s']:.2f} / {1000 * values['batch_1']['p99_s']:.2f}",
                         f"{1000 * values['batch_64']['p50_s']:.1f} / {1000 * values['batch_64']['p99_s']:.1f}",
                         f"{values['recall_at_10']:.3f}", f"{summary['speedup_batch_1']:.1f}x"])  # fmt: skip
    goal = result["goal"]
    largest = result["sizes"][str(goal["at_rows"])]["summary"]
    verdicts = [f"{SEARCH_SIDES[side]} {largest[side]['speedup_batch_1']:.0f}x, recall@10 "
                f"{largest[side]['recall_at_10']:.3f} ({'met' if met else 'missed'})"
                for side, met in result["goal_met_by"].items()]  # fmt: skip
    sweeps = []
    for size, measured in result["sizes"].items():
        first = measured["targets"][measured["targets_measured"][0]]
        for side in ("hnsw", "ivfpq"):
            name = first[side]["sweep"]["setting"]
            for row in first[side]["sweep"]["rows"]:
                speedup = brute_force_seconds(measured) / row["batch_1"]["p50_s"]
                sweeps.append([f"{int(size):,}", SEARCH_SIDES[side], f"{name} = {row[name]}",
                               f"{row['recall_at_10']:.3f}", f"{1000 * row['batch_1']['p50_s']:.2f}",
                               f"{1000 * row['batch_64']['p50_s']:.1f}", f"{speedup:.0f}x"])  # fmt: skip
    per_target = []
    for size, measured in result["sizes"].items():
        for target in measured["targets_measured"]:
            sides = measured["targets"][target]
            cells = [f"{sides[side]['build_s']:.1f} s, {sides[side]['recall_at_10']:.3f}"
                     for side in ("flat", "hnsw", "ivfpq")]  # fmt: skip
            per_target.append([f"{int(size):,}", target, *cells])
    return [
        "## 8. Search at scale",
        "",
        f"Setting: {result['setting']}. The brute force is e2-hf 0.1's search (a block scan per query, one query "
        "per call, so a batch of 64 is 64 calls); speed-ups are against it at batch 1, in the same run. Memory: the "
        "FAISS index file (brute force: the float32 vectors). One target per row (the global one); an index holds "
        "5 (global + 4 entities), so its build time and memory are 5x these.",
        "",
        *table(headers, rows, first_column_numeric=True),
        "",
        f"Goal: at {goal['at_rows']:,} rows, approximate search at least {goal['speedup']:.0f}x faster per query "
        f"than brute force with recall@10 >= {goal['recall_at_10']}, at the default settings: "
        + "; ".join(verdicts)
        + f": **{'met' if result['goal_met'] else 'missed'}**.",
        "",
        "The query-time setting of each approximate index, swept on the same index (global target):",
        "",
        *table(
            ["rows", "side", "setting", "recall@10", "batch 1 p50 ms", "batch 64 p50 ms", "speed-up at batch 1"],
            sweeps,
            first_column_numeric=True,
        ),
        "",
        "Per target (build, recall@10 of flat / HNSW / IVF-PQ):",
        "",
        *table(["rows", "target", "flat", "hnsw", "ivfpq"], per_target, first_column_numeric=True),
        "",
        f"Default search settings (these measurements chose them): `{json.dumps(result['default_settings'])}`.",
        "",
    ]


DOWNSTREAM_METRICS = {"bleu4": "BLEU@4", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr"}
DOWNSTREAM_ENTITIES = ("brand", "season", "subcategory", "composition")
ABLATION_NAMES = {"e2": "E2 (the paper's recipe)", "e2_no_fusion": "without fusion blocks",
                  "e2_no_region_loss": "without region loss", "clip_ft": "CLIP-FT (no selection tokens)"}  # fmt: skip


def mean_spread(value: dict, scale: float = 1.0, digits: int = 1) -> str:
    """`mean ± std` of a `{"mean", "std"}` summary; "—" where nothing was measured."""
    if value["mean"] is None:
        return "—"
    return f"{scale * value['mean']:.{digits}f} ± {scale * value['std']:.{digits}f}"


def e2_versus_clip_ft(e2: dict, clip_ft: dict, name: str, scale: float = 1.0) -> str:
    """E2's mean against CLIP-FT's, and whether the gap exceeds the larger standard deviation."""
    if e2["mean"] is None or clip_ft["mean"] is None:
        return f"{name}: not measured"
    difference = scale * (e2["mean"] - clip_ft["mean"])
    if difference == 0:
        return f"{name}: E2 level with CLIP-FT"
    within = abs(difference) <= scale * max(e2["std"], clip_ft["std"])
    return (f"{name}: E2 {'ahead of' if difference > 0 else 'behind'} CLIP-FT by {abs(difference):.3g}"
            + (" (within one std)" if within else ""))  # fmt: skip


def downstream_section(result: dict) -> list[str]:
    summary, seeds = result["summary"], len(result["per_seed"])
    captioning = summary["captioning"]
    caption_rows = []
    for backbone, recipes in captioning.items():
        for recipe, row in recipes.items():
            caption_rows.append([backbone.replace("_", "-").upper(), recipe,
                                 *[mean_spread(row[metric], digits=3) for metric in DOWNSTREAM_METRICS],
                                 *[mean_spread(row["attribute_accuracy"][entity], 100) for entity in
                                   DOWNSTREAM_ENTITIES]])  # fmt: skip
    comparisons = []
    for recipe in captioning["e2"]:
        e2, clip_ft = captioning["e2"][recipe], captioning["clip_ft"][recipe]
        comparisons.append(f"{recipe}: " + "; ".join(
            [e2_versus_clip_ft(e2[metric], clip_ft[metric], name) for metric, name in DOWNSTREAM_METRICS.items()]
            + [e2_versus_clip_ft(e2["attribute_accuracy"][entity], clip_ft["attribute_accuracy"][entity],
                                 f"{entity} named (points)", 100) for entity in DOWNSTREAM_ENTITIES]))  # fmt: skip
    composed = summary["composed_retrieval"]
    first = result["per_seed"][0]["result"]
    composed_rows = [[backbone.replace("_", "-").upper(), mean_spread(row["R@1"]), mean_spread(row["R@10"]),
                      ", ".join(f"{entity} {value:.0f}" for entity, value in
                                first["composed_retrieval"][backbone]["R@10_by_changed_entity"].items()
                                if value is not None)]
                     for backbone, row in composed.items()]  # fmt: skip
    ablation_rows = []
    for name, row in summary["ablations"].items():
        label = ABLATION_NAMES.get(name) or f"without the {name.removeprefix('e2_without_')} token group"
        ablation_rows.append([label, mean_spread(row["sumr"]),
                              *[mean_spread(row["tagging"][entity]) for entity in DOWNSTREAM_ENTITIES]])  # fmt: skip
    examples = [f"- E2 {recipe}: \"{item['caption']}\" — truth: \"{item['reference']}\""
                for recipe, row in first["captioning"]["e2"].items() for item in row["examples"][:2]]  # fmt: skip
    rewrites = first["composed_retrieval"]["e2"]["examples"][:2]
    triplet_examples = [f"- \"{item['modification']}\": caption \"{item['caption']}\" -> "
                        f"searched \"{item['rewritten']}\"" for item in rewrites]  # fmt: skip
    return [
        "## 9. Downstream: captioning, text-guided retrieval and the paper's ablations",
        "",
        f"Setting: {result['setting']}. Mean ± standard deviation over {seeds} seed(s); each seed has its own "
        "catalog and trains every model from the same start on the same data and budget.",
        "",
        "Zero-shot captioning of the validation products' first views (scores against the product text; "
        "attribute accuracy: the share of captions naming the product's own tag, in percent):",
        "",
        *table(
            [
                "backbone",
                "recipe",
                *DOWNSTREAM_METRICS.values(),
                *[f"{entity} named %" for entity in DOWNSTREAM_ENTITIES],
            ],
            caption_rows,
        ),  # fmt: skip
        "",
        *[f"- {line}" for line in comparisons],
        "",
        "Text-guided retrieval (a reference product, a one-tag change, the products carrying the changed tags; "
        "DeCap caption, tag rewriter, global search of the validation products; percent):",
        "",
        *table(["backbone", "R@1", "R@10", "R@10 by changed entity (first seed)"], composed_rows),
        "",
        "- "
        + "; ".join(
            e2_versus_clip_ft(composed["e2"][metric], composed["clip_ft"][metric], metric) for metric in ("R@1", "R@10")
        ),  # fmt: skip
        "",
        "Ablations (full-candidate SumR of the validation products; zero-shot tagging accuracy in percent "
        "from each entity's regional embedding, CLIP-FT's from the global one; — where the entity has no tokens):",
        "",
        *table(["model", "SumR", *[f"{entity} tagging" for entity in DOWNSTREAM_ENTITIES]], ablation_rows),
        "",
        "Captions of the first seed (E2 backbone), beside the product text:",
        "",
        *examples,
        "",
        "Rewrites of the first seed (E2 backbone):",
        "",
        *triplet_examples,
        "",
    ]


TARGETS_OF_AN_INDEX = 5  # the global embedding and four entities: one FAISS file each, all of one size


def hostile_input_section(result: dict) -> list[str]:
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


def startup_section(result: dict) -> list[str]:
    goal = result["goal_s"]
    rows = [[name, f"{values['median_s']:.2f}", f"{values['over_baseline_s']:+.2f}",
             "yes" if values["imports_torch"] else "no",
             "" if name.endswith("(baseline)") else ("met" if values["median_s"] < goal else "missed")]
            for name, values in result["commands"].items()]  # fmt: skip
    return [
        "## 11. Start-up of the command line",
        "",
        f"Setting: {result['setting']}.",
        "",
        *table(["command", "wall s", "over the bare interpreter, s", "imports torch", f"under {goal} s"], rows),
        "",
    ]


def logo_summary(selection: dict) -> str:
    """The brand tokens' logo hit rate over chance in the last fusion block, when measured."""
    blocks = selection.get("entities", {}).get("brand", {}).get("blocks") or []
    if not blocks:
        return "n/a"
    last = blocks[-1]
    return f"{100 * last['hit']:.1f}% / {100 * last['chance']:.1f}%"


SECTIONS = {
    "inference": inference_section,
    "train_step": train_step_section,
    "retrieval": retrieval_section,
    "quality": quality_section,
    "data": data_section,
    "tagging": tagging_section,
    "selection_experiments": selection_experiments_section,
    "real_catalog": real_catalog_section,
    "framing": framing_section,
    "serving": serving_section,
    "search_scale": search_scale_section,
    "downstream": downstream_section,
    "hostile_input": hostile_input_section,
    "startup": startup_section,
}
COMMANDS = {
    "inference": "bench_inference.py",
    "train_step": "bench_train_step.py",
    "retrieval": "bench_retrieval.py",
    "quality": "bench_quality.py --seeds 3",
    "data": "bench_data.py",
    "tagging": "bench_tagging.py --demo-dir DIR",
    "selection_experiments": "selection_experiments.py --testbed NAME --recipe NAME --seeds 0 [--clip-ft]",
    "real_catalog": "real_catalog.py",
    "framing": "framing.py",
    "serving": "serving.py --demo-dir DIR",
    "search_scale": "search_scale.py",
    "downstream": "downstream.py --seeds 3",
    "hostile_input": "hostile_input.py",
    "startup": "startup.py",
}


def main() -> None:
    results = {name: load(name) for name in SECTIONS}
    machine = next((result["machine"] for result in results.values() if result), None)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/make_report.py` from `benchmarks/results/*.json`; "
        "every number below is copied from those files, written by the scripts in one run each.",
        "",
    ]
    if machine:
        lines += [
            f"Machine (unless a section names another): {machine['cpu']}, {machine['cores']} cores "
            f"({machine['torch_threads']} torch threads), {machine['memory_gib']} GiB; Python {machine['python']}, "
            f"torch {machine['torch']}, transformers {machine['transformers']}. No GPU.",
            "",
        ]
    lines += [
        "Rerun one: `python benchmarks/<script>` (each prints its ratios and writes its JSON), then this "
        "generator. The scripts also take `--toy` (tiny sizes), which the test suite runs so they never rot.",
        "",
    ]
    for name, section in SECTIONS.items():
        if results[name] is not None and machine and results[name]["machine"]["cpu"] != machine["cpu"]:
            other = results[name]["machine"]
            section_lines = section(results[name])
            note = (f"Measured on another machine: {other['cpu']}, {other['cores']} cores, torch {other['torch']}, "
                    f"transformers {other['transformers']}; compare its ratios only with each other.")  # fmt: skip
            lines += (
                section_lines[:2]
                + [note, ""]
                + section_lines[2:]
                + [f"Rerun: `python benchmarks/{COMMANDS[name]}`.", ""]
            )
            continue
        if results[name] is None:
            lines += [f"## {name}", "", f"Not run yet: `python benchmarks/{COMMANDS[name]}`.", ""]
        else:
            lines += section(results[name]) + [f"Rerun: `python benchmarks/{COMMANDS[name]}`.", ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
