"""Per-entity evaluation: region retrieval and linear probes (spec, section 4).

Region retrieval: for one entity, the texts of its distinct values against the images' regional
embeddings of that entity. Image -> tag ranks the distinct values for each image (zero-shot
tagging), a hit being any value the product carries (a multi-value tag carries several); tag ->
image ranks the images for each distinct value, a hit being any image carrying it.

Linear probe: a softmax-regression classifier on frozen (global) image embeddings predicting each
entity's tag, trained on a random 80 % of the products with that tag and scored on the rest; a
held-out product whose tag never occurs in training counts as an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .retrieval import recalls


def distinct_tags(tags: Sequence[str | None]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """`(distinct texts, label per item (-1 when missing), present mask)`; texts in first-seen order."""
    names: dict[str, int] = {}
    labels = [names.setdefault(tag, len(names)) if tag else -1 for tag in tags]
    labels = torch.tensor(labels, dtype=torch.long)
    return list(names), labels, labels >= 0


def tag_value_matrix(value_sets: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor]:
    """`(distinct values in first-seen order, carried [items, values] bool)` from each item's values."""
    names = list(dict.fromkeys(value for values in value_sets for value in values))
    return names, values_carried(value_sets, names)


def values_carried(value_sets: Sequence[Sequence[str]], names: Sequence[str]) -> torch.Tensor:
    """`[items, names]` bool: which of `names` each item carries (values outside `names` are ignored)."""
    column = {name: position for position, name in enumerate(names)}
    carried = torch.zeros((len(value_sets), len(names)), dtype=torch.bool)
    for item, values in enumerate(value_sets):
        carried[item, [column[value] for value in values if value in column]] = True
    return carried


def carried_matrix(truth: torch.Tensor, num_tags: int) -> torch.Tensor:
    """`[items]` labels (-1 = none) or an `[items, tags]` bool matrix -> the bool matrix."""
    if truth.dim() == 2:
        return truth.bool()
    carried = torch.zeros((len(truth), num_tags), dtype=torch.bool)
    rows = truth >= 0
    carried[rows.nonzero()[:, 0], truth[rows]] = True
    return carried


def region_retrieval_metrics(
    region_embeds: torch.Tensor, tag_embeds: torch.Tensor, truth: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict:
    """`region_embeds` `[items, dim]` (one entity), `tag_embeds` `[distinct tags, dim]`, `truth`
    `[items]` (index of each item's tag, -1 = missing) or `[items, tags]` bool (the values each
    item carries; none = left out). Recalls in percent; ties count against the positive."""
    carried = carried_matrix(truth, tag_embeds.shape[0])
    present = carried.any(dim=1)
    images = F.normalize(region_embeds[present].float(), dim=-1)
    tags = F.normalize(tag_embeds.float(), dim=-1)
    carried = carried[present]  # [items, tags]
    scores = images @ tags.t()  # [items, distinct tags]
    best_value = scores.masked_fill(~carried, float("-inf")).max(dim=1, keepdim=True).values
    image_ranks = (scores.masked_fill(carried, float("-inf")) >= best_value).sum(dim=1)
    tag_scores = scores.t()  # [tags, items]
    best_positive = tag_scores.masked_fill(~carried.t(), float("-inf")).max(dim=1, keepdim=True).values
    tag_ranks = (tag_scores.masked_fill(carried.t(), float("-inf")) >= best_positive).sum(dim=1)
    used = carried.any(dim=0)
    return {"image_to_tag": recalls(image_ranks, ks), "tag_to_image": recalls(tag_ranks[used], ks),
            "items": int(present.sum()), "distinct_tags": int(used.sum())}  # fmt: skip


def linear_probe_accuracy(
    features: torch.Tensor,
    tags: Sequence[str | None],
    seed: int = 0,
    train_fraction: float = 0.8,
    steps: int = 300,
    weight_decay: float = 1e-4,
) -> dict[str, float | int]:
    """Accuracy (percent) of a linear classifier on frozen `features` predicting `tags`."""
    names, labels, present = distinct_tags(tags)
    features = F.normalize(features[present].float(), dim=-1)
    labels = labels[present]
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    cut = int(round(train_fraction * len(labels)))
    train, test = order[:cut], order[cut:]
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"a linear probe needs items on both sides of the split; got {len(labels)} items")
    classifier = torch.nn.Linear(features.shape[1], len(names))
    optimizer = torch.optim.LBFGS(classifier.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(features[train] * 10), labels[train])
        loss = loss + weight_decay * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predictions = classifier(features[test] * 10).argmax(dim=1)
    accuracy = 100.0 * float((predictions == labels[test]).float().mean())
    return {"accuracy": accuracy, "train_items": len(train), "test_items": len(test), "classes": len(names)}
