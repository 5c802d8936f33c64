"""Do the selection tokens find their entity's detail? Scored against ground-truth boxes.

    report = selection_metrics(model, processor, "catalog/catalog.jsonl", split="validation")
    report["entities"]["brand"]["blocks"][-1]["hit"]     # share of images where a brand token chose a logo patch

    e2-hf evaluate --model M --data jsonl:catalog/catalog.jsonl:validation --selection

The catalog is a JSONL catalog whose records carry `details`: per view, pixel boxes
`(left, top, right, bottom)` of named details (`e2-hf make-synthetic` writes `logo`, `trim` and
`garment`). A patch *holds* a detail when the detail's box, mapped through the processor's resize
and centre crop, overlaps it. Per entity, token and fusion block (eval mode, argmax choices):

- `hit`: share of views where the token chose a patch holding the entity's detail;
- `chance`: the mean share of patches holding it (a token choosing uniformly at random);
- `position_only`: the hit rate the token would get from its own choice frequencies alone,
  ignoring the image (a token parked on the hem "hits" the trim when the hem never moves);
- `collapse`: share of views in which the token chose its most frequent patch;
- `distinct`: how many different patches it chose.

With `interventions.jsonl` beside the catalog (edited copies of views with one detail moved or
removed), each edit reports per token whether the choice `changed`, and for tokens that were on
the detail before the edit (`*_if_hit`), whether they `follow` a moved detail or `stay` on its
former patches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..images import open_image
from ..synthetic import ENTITY_DETAILS
from .embedding import evaluating

EDIT_DETAILS = {"logo_moved": "logo", "logo_removed": "logo", "trim_removed": "trim"}
Box = Sequence[float]


@dataclass
class GroundTruthView:
    key: tuple[str, int]  # (product id, view)
    image_path: Path
    details: dict[str, Box | None]


@dataclass
class PatchGeometry:
    """How a source image's pixels land on the model's patch grid (the image processor's framing)."""

    image_processor: Any  # E2CLIPImageProcessor: `view_box` and `crop_size`
    patch_size: int

    @property
    def grid(self) -> tuple[int, int]:
        crop = self.image_processor.crop_size
        return crop["height"] // self.patch_size, crop["width"] // self.patch_size

    def patches(self, box: Box, image_size: tuple[int, int]) -> np.ndarray:
        """Row-major indices of the patches that `box` (source pixels) overlaps; `image_size` is (width, height)."""
        view_left, view_top, view_right, view_bottom = self.image_processor.view_box(*image_size)
        rows, columns = self.grid
        scale_x = columns * self.patch_size / (view_right - view_left)
        scale_y = rows * self.patch_size / (view_bottom - view_top)
        left, right = (box[0] - view_left) * scale_x, (box[2] - view_left) * scale_x
        top, bottom = (box[1] - view_top) * scale_y, (box[3] - view_top) * scale_y
        edges_y, edges_x = np.arange(rows) * self.patch_size, np.arange(columns) * self.patch_size
        overlap_y = (top < edges_y + self.patch_size) & (bottom > edges_y)  # [rows]
        overlap_x = (left < edges_x + self.patch_size) & (right > edges_x)  # [columns]
        return np.flatnonzero(overlap_y[:, None] & overlap_x[None, :])


def patch_geometry(model, processor) -> PatchGeometry:
    return PatchGeometry(processor.image_processor, model.config.vision_config.patch_size)


def read_ground_truth(catalog_path: str | Path, split: str | None = "validation") -> list[GroundTruthView]:
    """Every view of the catalog's products (of `split`) with its detail boxes."""
    catalog_path = Path(catalog_path)
    views = []
    with open(catalog_path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if split is not None and record.get("split") != split:
                continue
            details = record.get("details")
            if not isinstance(details, list) or len(details) != len(record.get("images", [])):
                raise ValueError(
                    f"{catalog_path} line {line_number}: no `details` list with one entry per image; "
                    "selection metrics need a catalog with ground truth (e2-hf make-synthetic writes one)"
                )
            for view, (path, boxes) in enumerate(zip(record["images"], details)):
                views.append(GroundTruthView((str(record["product_id"]), view), catalog_path.parent / path, boxes))
    if not views:
        raise ValueError(f"{catalog_path}: no products in split {split!r}")
    return views


def read_interventions(catalog_path: str | Path) -> list[tuple[str, GroundTruthView]]:
    """`(edit, edited view)` pairs from `interventions.jsonl` beside the catalog (none if absent)."""
    path = Path(catalog_path).parent / "interventions.jsonl"
    if not path.is_file():
        return []
    edits = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                view = GroundTruthView((str(record["product_id"]), record["view"]), path.parent / record["image"],
                                       record["details"])  # fmt: skip
                edits.append((record["edit"], view))
    return edits


@torch.no_grad()
def chosen_patches(model, processor, image_paths: Sequence[Path], batch_size: int = 64) -> np.ndarray:
    """`[images, fusion blocks, selection tokens]` patch indices chosen in eval mode (argmax)."""
    parameter = next(model.parameters())
    chosen = []
    with evaluating(model):
        for start in range(0, len(image_paths), batch_size):
            images = [open_image(path) for path in image_paths[start : start + batch_size]]
            pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
            outputs = model.vision_model(pixel_values.to(parameter.device, parameter.dtype))
            chosen.append(outputs.selection_indices.cpu().numpy())
    return np.concatenate(chosen)


def _image_sizes(views: Sequence[GroundTruthView]) -> list[tuple[int, int]]:
    """`(width, height)` of each view's image, read from the file header once."""
    sizes = []
    for view in views:
        with Image.open(view.image_path) as image:
            sizes.append(image.size)
    return sizes


def _detail_patch_sets(
    views: Sequence[GroundTruthView], sizes: Sequence[tuple[int, int]], detail: str, geometry: PatchGeometry
) -> list[np.ndarray | None]:
    """Per view, the patches holding `detail` (None where the view has no such detail)."""
    return [
        None if view.details.get(detail) is None else geometry.patches(view.details[detail], size)
        for view, size in zip(views, sizes)
    ]


def token_rates(choices: np.ndarray, targets: Sequence[np.ndarray | None], num_patches: int) -> dict[str, float]:
    """Hit, chance, position-only, collapse and distinct for one token's `[views]` choices."""
    present = [index for index, target in enumerate(targets) if target is not None]
    if not present:
        return {}
    choices = choices[present]
    frequency = np.bincount(choices, minlength=num_patches) / len(choices)  # [patches]
    targets = [targets[index] for index in present]
    hits = np.array([choice in target for choice, target in zip(choices, targets)])
    return {
        "hit": float(hits.mean()),
        "chance": float(np.mean([len(target) / num_patches for target in targets])),
        "position_only": float(np.mean([frequency[target].sum() for target in targets])),
        "collapse": float(frequency.max()),
        "distinct": int((frequency > 0).sum()),
        "views": len(present),
    }


def _mean_rates(tokens: list[dict[str, float]]) -> dict[str, float]:
    keys = ("hit", "chance", "position_only", "collapse")
    summary = {key: float(np.mean([token[key] for token in tokens])) for key in keys}
    summary["best_token_hit"] = max(token["hit"] for token in tokens)
    summary["hit_over_chance"] = summary["hit"] / summary["chance"] if summary["chance"] else float("nan")
    summary["hit_over_position_only"] = (
        summary["hit"] / summary["position_only"] if summary["position_only"] else float("nan")
    )
    return summary


def edit_rates(before: np.ndarray, after: np.ndarray, old: Sequence[np.ndarray], new: Sequence[np.ndarray | None]):
    """One token's response to an edit: `[pairs]` choices before/after, the detail's patches before/after."""
    was_on = np.array([choice in patches for choice, patches in zip(before, old)])
    now_on_new = np.array([patches is not None and choice in patches for choice, patches in zip(after, new)])
    now_on_old = np.array([choice in patches for choice, patches in zip(after, old)])
    rates = {"changed": float((before != after).mean()), "on_former_patches": float(now_on_old.mean()),
             "hit_before": float(was_on.mean()), "pairs": len(before)}  # fmt: skip
    if any(patches is not None for patches in new):
        rates["follow"] = float(now_on_new.mean())
    if was_on.any():
        rates["changed_if_hit"] = float((before != after)[was_on].mean())
        if "follow" in rates:
            rates["follow_if_hit"] = float(now_on_new[was_on].mean())
            rates["stay_if_hit"] = float((now_on_old & ~now_on_new)[was_on].mean())
    return rates


def selection_metrics(
    model,
    processor,
    catalog_path: str | Path,
    split: str | None = "validation",
    entity_details: dict[str, str] | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Hit rates per entity, token and fusion block, and the intervention check (see module doc)."""
    config = model.config
    if not config.entities or not config.active_fusion_layers:
        raise ValueError("This model has no selection tokens or fusion blocks: nothing to score.")
    entity_details = entity_details or ENTITY_DETAILS
    geometry = patch_geometry(model, processor)
    num_patches = geometry.grid[0] * geometry.grid[1]
    views = read_ground_truth(catalog_path, split)
    sizes = _image_sizes(views)
    chosen = chosen_patches(model, processor, [view.image_path for view in views], batch_size)  # [v, blocks, tokens]
    report: dict[str, Any] = {"views": len(views), "grid": list(geometry.grid), "entities": {}, "interventions": {}}
    scored = [entity for entity in config.entities if entity_details.get(entity)]
    for entity in scored:
        detail = entity_details[entity]
        targets = _detail_patch_sets(views, sizes, detail, geometry)
        start, end = config.entity_token_slices[config.entities.index(entity)]
        blocks = []
        for block, layer in enumerate(config.active_fusion_layers):
            tokens = [token_rates(chosen[:, block, token], targets, num_patches) for token in range(start, end)]
            if tokens and tokens[0]:
                blocks.append({"block": block, "layer": layer, **_mean_rates(tokens), "tokens": tokens})
        report["entities"][entity] = {"detail": detail, "blocks": blocks}

    edits = [(edit, view) for edit, view in read_interventions(catalog_path) if EDIT_DETAILS.get(edit)]
    index_of = {view.key: index for index, view in enumerate(views)}
    edits = [(edit, view) for edit, view in edits if view.key in index_of]
    if edits:
        edited = chosen_patches(model, processor, [view.image_path for _, view in edits], batch_size)
        edited_sizes = _image_sizes([view for _, view in edits])
        for edit in sorted({edit for edit, _ in edits}):
            rows = [row for row, (name, _) in enumerate(edits) if name == edit]
            originals = [index_of[edits[row][1].key] for row in rows]
            old = _detail_patch_sets([views[i] for i in originals], [sizes[i] for i in originals], EDIT_DETAILS[edit],
                                     geometry)  # fmt: skip
            new = _detail_patch_sets([edits[row][1] for row in rows], [edited_sizes[row] for row in rows],
                                     EDIT_DETAILS[edit], geometry)  # fmt: skip
            report["interventions"][edit] = _edit_report(EDIT_DETAILS[edit], chosen[originals], edited[rows], old, new,
                                                         config, entity_details)  # fmt: skip
    return report


def _edit_report(detail, before, after, old, new, config, entity_details) -> dict[str, Any]:
    """Per entity whose detail was edited and per fusion block: each token's `edit_rates`, and
    their mean. `before`/`after`: `[pairs, blocks, tokens]` choices on the originals and the edits."""
    report: dict[str, Any] = {"detail": detail, "pairs": len(before), "entities": {}}
    for entity in config.entities:
        if entity_details.get(entity) != detail:
            continue
        start, end = config.entity_token_slices[config.entities.index(entity)]
        blocks = []
        for block, layer in enumerate(config.active_fusion_layers):
            tokens = [
                edit_rates(before[:, block, token], after[:, block, token], old, new) for token in range(start, end)
            ]
            keys = dict.fromkeys(key for token in tokens for key in token if key != "pairs")  # any token's keys
            summary = {key: float(np.mean([token[key] for token in tokens if key in token])) for key in keys}
            blocks.append({"block": block, "layer": layer, **summary, "tokens": tokens})
        report["entities"][entity] = blocks
    return report


def selection_table(report: dict[str, Any], block: int = -1) -> str:
    """Markdown: per entity, the block's mean hit rate beside chance and the position-only rate."""
    lines = [
        "| entity | detail | hit | chance | position-only | hit / chance | hit / position-only | best token "
        "| collapse |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entity, entry in report["entities"].items():
        if not entry["blocks"]:
            continue
        row = entry["blocks"][block]
        lines.append(
            f"| {entity} | {entry['detail']} | {100 * row['hit']:.1f} | {100 * row['chance']:.1f} | "
            f"{100 * row['position_only']:.1f} | {row['hit_over_chance']:.2f}x | "
            f"{row['hit_over_position_only']:.2f}x | {100 * row['best_token_hit']:.1f} | {100 * row['collapse']:.1f} |"
        )
    return "\n".join(lines)


def intervention_table(report: dict[str, Any], block: int = -1) -> str:
    """Markdown: per edit and entity, how the tokens' choices respond."""
    lines = [
        "| edit | entity | pairs | on the detail before | changed | changed if on it | follows (if on it) "
        "| on former patches |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def percent(row, key):
        return f"{100 * row[key]:.1f}" if key in row else "-"

    for edit, entry in report["interventions"].items():
        for entity, blocks in entry["entities"].items():
            row = blocks[block]
            lines.append(
                f"| {edit} | {entity} | {entry['pairs']} | {percent(row, 'hit_before')} | {percent(row, 'changed')} | "
                f"{percent(row, 'changed_if_hit')} | {percent(row, 'follow_if_hit')} | "
                f"{percent(row, 'on_former_patches')} |"
            )
    return "\n".join(lines)
