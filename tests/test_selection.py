"""Ground truth in the synthetic catalog and the selection metrics scored against it."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from e2_hf import from_clip
from e2_hf.evaluation import selection as selection_module
from e2_hf.evaluation.selection import (
    PatchGeometry,
    edit_rates,
    patch_geometry,
    read_ground_truth,
    read_interventions,
    selection_metrics,
    token_rates,
)
from e2_hf.modeling import E2CLIPProcessor, clip_image_processor
from e2_hf.synthetic import make_synthetic


@pytest.fixture(scope="module")
def truth_catalog(tmp_path_factory):
    folder = tmp_path_factory.mktemp("truth")
    make_synthetic(folder, products=30, seed=2, views=2, image_size=32, hard=True, progress=False,
                   brands=6, logo_colours="palette", framing="varied")  # fmt: skip
    return folder


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def changed_box(before: np.ndarray, after: np.ndarray) -> list[int] | None:
    rows, columns = np.nonzero(np.abs(before - after).max(axis=2) > 0)
    if len(rows) == 0:
        return None
    return [int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1]


def inside(box, outer) -> bool:
    return outer[0] <= box[0] and outer[1] <= box[1] and box[2] <= outer[2] and box[3] <= outer[3]


def test_every_view_has_detail_boxes_in_both_layouts(truth_catalog):
    records = [json.loads(line) for line in (truth_catalog / "catalog.jsonl").read_text().splitlines()]
    boxes = [view for record in records if record["split"] == "train" for view in record["details"]]
    assert all(len(record["details"]) == len(record["images"]) == 2 for record in records)
    for view in boxes:
        assert view["garment"] is not None and inside(view["trim"], view["garment"])
        assert view["logo"] is None or (view["logo"][2] - view["logo"][0] == 4)  # 32 px image: 4 px logo
    with h5py.File(truth_catalog / "train.h5") as handle:
        for detail in ("logo", "trim", "garment"):
            stored = handle[f"input_{detail}_box"][:]
            expected = [view[detail] or [-1, -1, -1, -1] for view in boxes]
            assert stored.tolist() == expected


def test_detail_boxes_are_not_read_as_a_tag(truth_catalog):
    from e2_hf.data import open_catalog

    product = open_catalog(f"jsonl:{truth_catalog / 'catalog.jsonl'}")[0]
    assert "details" not in product.tags and set(product.tags) == {"brand", "season", "subcategory", "composition"}


def test_edits_change_only_their_detail(truth_catalog):
    edits = read_interventions(truth_catalog / "catalog.jsonl")
    kinds = {edit for edit, _ in edits}
    assert kinds == {"logo_moved", "logo_removed", "trim_removed"}
    originals = {view.key: view for view in read_ground_truth(truth_catalog / "catalog.jsonl")}
    for edit, edited in edits:
        original = originals[edited.key]
        change = changed_box(pixels(original.image_path), pixels(edited.image_path))
        assert change is not None, edit
        if edit == "logo_removed":
            assert inside(change, original.details["logo"]) and edited.details["logo"] is None
        elif edit == "trim_removed":
            assert inside(change, original.details["trim"]) and edited.details["trim"] is None
        else:
            old, new = original.details["logo"], edited.details["logo"]
            union = [min(old[0], new[0]), min(old[1], new[1]), max(old[2], new[2]), max(old[3], new[3])]
            assert inside(change, union) and max(abs(old[0] - new[0]), abs(old[1] - new[1])) >= 8


def test_the_logo_box_is_where_the_logo_is(truth_catalog):
    originals = {view.key: view for view in read_ground_truth(truth_catalog / "catalog.jsonl")}
    for edit, edited in read_interventions(truth_catalog / "catalog.jsonl"):
        if edit == "logo_removed":
            original = originals[edited.key]
            assert changed_box(pixels(original.image_path), pixels(edited.image_path)) == original.details["logo"]


def test_patch_geometry_follows_resize_and_centre_crop():
    identity = PatchGeometry(clip_image_processor(32), patch_size=8)
    assert identity.patches([0, 0, 8, 8], (32, 32)).tolist() == [0]
    assert identity.patches([7, 7, 9, 9], (32, 32)).tolist() == [0, 1, 4, 5]
    assert identity.patches([24, 24, 32, 32], (32, 32)).tolist() == [15]
    # 128x64 (w x h) -> 64x32 -> centre crop 32x32 drops 16 px each side: x 40..48 lands on 4..8, y 0..32 on 0..16
    wide = PatchGeometry(clip_image_processor(32), patch_size=8)
    assert wide.patches([40, 0, 48, 32], (128, 64)).tolist() == [0, 4]
    assert wide.patches([0, 0, 16, 16], (128, 64)).tolist() == []  # cropped away
    # pad: 128x64 is centred on a 128x128 canvas (32 px bands above and below) -> 32x32, a quarter of the size
    padded = PatchGeometry(clip_image_processor(32, "pad"), patch_size=8)
    assert padded.patches([0, 0, 16, 16], (128, 64)).tolist() == [4]  # the corner is kept, one band row down
    assert padded.patches([0, 0, 128, 64], (128, 64)).tolist() == list(range(4, 12))  # the photo: rows 1..2


def test_token_rates_on_known_choices():
    targets = [np.array([0, 1]), np.array([2]), None, np.array([3])]
    choices = np.array([1, 1, 7, 1])  # a token parked on patch 1
    rates = token_rates(choices, targets, num_patches=4)
    assert rates["views"] == 3 and rates["hit"] == pytest.approx(1 / 3)
    assert rates["chance"] == pytest.approx((2 / 4 + 1 / 4 + 1 / 4) / 3)
    assert rates["position_only"] == pytest.approx(1 / 3)  # always patch 1: hits exactly where 1 is a target
    assert rates["collapse"] == 1.0 and rates["distinct"] == 1
    follower = token_rates(np.array([0, 2, 5, 3]), targets, num_patches=4)
    assert follower["hit"] == 1.0 and follower["position_only"] < 1.0 and follower["distinct"] == 3


def test_edit_rates_follow_and_stay():
    old = [np.array([0]), np.array([1]), np.array([2])]
    new = [np.array([3]), np.array([3]), np.array([3])]
    rates = edit_rates(np.array([0, 1, 9]), np.array([3, 1, 9]), old, new)
    assert rates["hit_before"] == pytest.approx(2 / 3) and rates["changed"] == pytest.approx(1 / 3)
    assert rates["follow_if_hit"] == 0.5 and rates["stay_if_hit"] == 0.5 and rates["changed_if_hit"] == 0.5
    removed = edit_rates(np.array([0, 5]), np.array([4, 5]), old[:2], [None, None])
    assert "follow" not in removed and removed["changed_if_hit"] == 1.0 and removed["on_former_patches"] == 0.0


@pytest.fixture(scope="module")
def model_and_processor(small_clip):
    model = from_clip(str(small_clip), fusion_layers=[1, 2]).eval()
    return model, E2CLIPProcessor.from_pretrained(str(small_clip), entities=model.config.entities)


def oracle_choices(views, geometry, num_tokens, blocks, detail="logo", fallback=0):
    """Each token chooses the first patch of `detail` (or `fallback` where there is none)."""
    chosen = np.full((len(views), blocks, num_tokens), fallback)
    for index, view in enumerate(views):
        box = view.details.get(detail)
        if box is not None:
            with Image.open(view.image_path) as image:
                chosen[index] = geometry.patches(box, image.size)[0]
    return chosen


def test_a_token_on_the_logo_scores_full_hits_and_follows_it(truth_catalog, model_and_processor, monkeypatch):
    model, processor = model_and_processor
    geometry = patch_geometry(model, processor)
    num_tokens, blocks = model.config.num_selection_tokens, len(model.config.active_fusion_layers)

    def oracle(model, processor, paths, batch_size=64):
        views = {str(view.image_path): view for view in read_ground_truth(truth_catalog / "catalog.jsonl")}
        views.update({str(view.image_path): view for _, view in read_interventions(truth_catalog / "catalog.jsonl")})
        return oracle_choices([views[str(path)] for path in paths], geometry, num_tokens, blocks)

    monkeypatch.setattr(selection_module, "chosen_patches", oracle)
    report = selection_metrics(model, processor, truth_catalog / "catalog.jsonl")
    brand = report["entities"]["brand"]["blocks"][-1]
    assert brand["hit"] == 1.0 and brand["hit_over_chance"] > 3 and brand["position_only"] < 0.5
    moved = report["interventions"]["logo_moved"]["entities"]["brand"][-1]
    assert moved["follow_if_hit"] == 1.0 and moved["stay_if_hit"] == 0.0
    removed = report["interventions"]["logo_removed"]["entities"]["brand"][-1]
    assert removed["changed_if_hit"] > 0.5  # the logo is gone: the oracle falls back to patch 0


def test_a_parked_token_scores_its_position_only_rate(truth_catalog, model_and_processor, monkeypatch):
    model, processor = model_and_processor
    num_tokens, blocks = model.config.num_selection_tokens, len(model.config.active_fusion_layers)

    def parked(model, processor, paths, batch_size=64):
        return np.full((len(paths), blocks, num_tokens), 5)

    monkeypatch.setattr(selection_module, "chosen_patches", parked)
    report = selection_metrics(model, processor, truth_catalog / "catalog.jsonl")
    for entity in ("brand", "season"):
        row = report["entities"][entity]["blocks"][-1]
        assert row["hit"] == pytest.approx(row["position_only"]) and row["collapse"] == 1.0
    assert report["interventions"]["logo_moved"]["entities"]["brand"][-1]["changed"] == 0.0


def test_evaluate_selection_command(truth_catalog, e2_model_dir, tmp_path):
    output = tmp_path / "metrics.json"
    completed = subprocess.run(
        [sys.executable, "-m", "e2_hf.cli", "evaluate", "--model", str(e2_model_dir), "--data",
         f"jsonl:{truth_catalog / 'catalog.jsonl'}:validation", "--selection", "--output", str(output)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| brand | logo |" in completed.stdout and "| logo_moved | brand |" in completed.stdout
    selection = json.loads(output.read_text())["selection"]
    assert selection["views"] == 12 and selection["grid"] == [4, 4]  # 6 validation products x 2 views
    for entity in ("brand", "season", "subcategory", "composition"):
        for block in selection["entities"][entity]["blocks"]:
            assert len(block["tokens"]) == 2
            assert 0 <= block["hit"] <= 1 and 0 < block["chance"] <= 1 and 0 < block["collapse"] <= 1


def test_selection_needs_ground_truth(catalog, model_and_processor, tmp_path):
    plain = tmp_path / "plain.jsonl"
    lines = [json.loads(line) for line in (catalog / "catalog.jsonl").read_text().splitlines()]
    plain.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "details"}) + "\n" for r in lines))
    with pytest.raises(ValueError, match="plain.jsonl line 41: no `details`"):  # the first validation row
        selection_metrics(*model_and_processor, plain)


def test_an_edit_summary_keeps_rates_that_only_some_tokens_have(model_and_processor):
    from e2_hf.evaluation.selection import _edit_report

    config = model_and_processor[0].config
    num_tokens, blocks = config.num_selection_tokens, len(config.active_fusion_layers)
    before = np.full((2, blocks, num_tokens), 9)
    before[:, :, 1] = 0  # only the second brand token is on the logo (patch 0) before the edit
    after = before.copy()
    after[:, :, 1] = 3  # ... and follows it to patch 3
    old, new = [np.array([0]), np.array([0])], [np.array([3]), np.array([3])]
    brand = _edit_report("logo", before, after, old, new, config, {"brand": "logo"})["entities"]["brand"][-1]
    assert brand["follow_if_hit"] == 1.0 and brand["hit_before"] == 0.5
