"""Zero-shot tagging per entity: each entity's regional embedding against that entity's candidate tags.

    candidates = {"brand": ["Gucci", "Prada"], "season": ["FW2016", "SS2017"]}
    predictions = zero_shot_tags(model, processor, images, candidates)
    predictions[0]["brand"]   # [TagScore("Gucci", 0.83, ...), TagScore("Prada", 0.17, ...)]

The tag texts are embedded with the text tower exactly as the region loss embedded them in
training (the bare tag text). `source="global"` scores the global image embedding instead: the
baseline that `tagging_accuracy` and `e2-hf tag --data` compare against.

    e2-hf tag --model M --image a.jpg --candidates tags.json        # predictions per image
    e2-hf tag --model M --data jsonl:catalog.jsonl:validation       # accuracy, regional vs global
    e2-hf tag --model M --index milvus-lite:catalog.db              # the same from an index's stored embeddings
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .choices import TAG_SOURCES
from .evaluation.embedding import CatalogEmbeddings, embed_texts, evaluating
from .evaluation.entities import carried_matrix, values_carried
from .modeling import E2CLIPEmbedder, E2CLIPModel, E2CLIPProcessor

SEARCH_TOP_K = 10


@dataclass(frozen=True)
class TagScore:
    tag: str
    probability: float  # softmax over the entity's candidates at the model's logit scale
    similarity: float  # cosine similarity


def check_candidates(candidates: Mapping[str, Sequence[str]], entities: Sequence[str]) -> dict[str, list[str]]:
    """Candidates restricted to known entities, each a non-empty list of distinct non-empty texts."""
    unknown = [name for name in candidates if name not in entities]
    if unknown:
        raise ValueError(f"unknown entities {unknown}; this model's entities are {list(entities)}")
    checked = {}
    for entity, tags in candidates.items():
        tags = [str(tag).strip() for tag in tags]
        if not tags or any(not tag for tag in tags):
            raise ValueError(f"the candidate tags of {entity!r} must be a non-empty list of non-empty texts")
        if len(set(tags)) != len(tags):
            raise ValueError(f"the candidate tags of {entity!r} repeat a tag")
        checked[entity] = tags
    if not checked:
        raise ValueError("no candidate tags given")
    return checked


def catalog_candidates(catalog, entities: Sequence[str]) -> dict[str, list[str]]:
    """Each entity's distinct values in a catalog (or an index), sorted; entities without any are left out."""
    candidates = {entity: sorted({value for values in catalog.value_sets(entity) for value in values})
                  for entity in entities}  # fmt: skip
    return {entity: tags for entity, tags in candidates.items() if tags}


def candidate_embeddings(model: E2CLIPModel, processor: E2CLIPProcessor, candidates: Mapping[str, Sequence[str]],
                         device: str = "cpu") -> dict[str, torch.Tensor]:  # fmt: skip
    """`{entity: [candidates, dim]}` L2-normalised text embeddings of the tag texts."""
    return {entity: embed_texts(model, processor, list(tags), device=device) for entity, tags in candidates.items()}


def tag_similarities(image_embeds: torch.Tensor, region_embeds: torch.Tensor, entities: Sequence[str],
                     tag_embeds: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:  # fmt: skip
    """`{entity: [images, candidates]}` cosine similarities from the entity's region or the global embedding."""
    if source not in TAG_SOURCES:
        raise ValueError(f"source must be one of {TAG_SOURCES}, got {source!r}")
    similarities = {}
    for entity, tags in tag_embeds.items():
        images = image_embeds if source == "global" else region_embeds[:, list(entities).index(entity)]
        similarities[entity] = torch.nn.functional.normalize(images.float(), dim=-1) @ tags.T
    return similarities


@torch.no_grad()
def zero_shot_tags(
    model: E2CLIPModel,
    processor: E2CLIPProcessor,
    images: Sequence[Any],
    candidates: Mapping[str, Sequence[str]],
    top_k: int | None = None,
    source: str = "region",
    tag_embeds: Mapping[str, torch.Tensor] | None = None,
) -> list[dict[str, list[TagScore]]]:
    """For each image and entity, the candidates ranked by score (the `top_k` best, or all).

    `tag_embeds`: `candidate_embeddings(model, processor, candidates)` computed once, for callers
    that tag many images against the same candidates (the Space does)."""
    candidates = check_candidates(candidates, model.config.entities)
    device = next(model.parameters()).device
    with evaluating(model):  # the embedder puts the model in eval mode; the caller's mode comes back after
        # the caller's own images, as it gives them (no size limit: a served path limits its uploads)
        embedder = E2CLIPEmbedder(model, processor, device=device, progress=False, image_limits=None)
        embeddings = embedder.embed_images(list(images))
    if tag_embeds is None:
        tag_embeds = candidate_embeddings(model, processor, candidates, device=str(device))
    similarities = tag_similarities(embeddings.image_embeds, embeddings.region_embeds, model.config.entities,
                                    tag_embeds, source)  # fmt: skip
    scale = model.logit_scale.exp().float().cpu()
    predictions = [{} for _ in range(len(embeddings.image_embeds))]
    for entity, scores in similarities.items():
        probabilities = (scale * scores).softmax(dim=-1)
        order = scores.argsort(dim=-1, descending=True)[:, :top_k]
        for row, ranked in enumerate(order.tolist()):
            predictions[row][entity] = [
                TagScore(candidates[entity][column], float(probabilities[row, column]), float(scores[row, column]))
                for column in ranked
            ]
    return predictions


@dataclass
class StoredEmbeddings:
    """An index's image embeddings read back for `tagging_accuracy` (nothing is embedded again)."""

    image_embeds: torch.Tensor  # [rows, dim]
    region_embeds: torch.Tensor | None  # [rows, entities, dim]; None for a global-only index
    items: list  # each row's IndexItem, read with its vectors
    entities: list[str]

    @classmethod
    def read(cls, store) -> StoredEmbeddings:
        """Every row of `store` (an index folder or a Milvus store), in row order, in one pass."""
        items, images, regions = [], [], []
        for batch, image, region, _ in store.read_rows(with_thumbnails=False):
            items += batch
            images.append(image.float())
            regions.append(region.float())
        image_embeds = torch.cat(images) if images else torch.zeros(0, store.dim)
        region_embeds = torch.cat(regions) if regions else torch.zeros(0, len(store.entities), store.dim)
        return cls(image_embeds, region_embeds if store.entities else None, items, store.entities)

    @property
    def catalog(self) -> StoredEmbeddings:
        """What `tagging_accuracy` reads the tags from (as `CatalogEmbeddings.catalog`): these rows."""
        return self

    def value_sets(self, entity: str) -> list[tuple[str, ...]]:
        """Each row's values of `entity` (as `Catalog.value_sets`), from the items read."""
        return [item.values_of(entity) for item in self.items]


def tagging_accuracy(
    model: E2CLIPModel,
    processor: E2CLIPProcessor,
    embeddings: CatalogEmbeddings | StoredEmbeddings,
    candidates: Mapping[str, Sequence[str]] | None = None,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Top-1 accuracy (percent) of zero-shot tagging per entity, regional vs global embedding.

    Candidates default to each entity's distinct values in the catalog. Products without a value
    among the candidates are left out (`items` counts the rest). A prediction is right only when a
    value the product carries scores strictly higher than every candidate it does not carry (for a
    multi-value tag: the top candidate is one of its values). Each entity
    also gets `search_precision_at_10` per source: the same scores read as a search for each
    candidate tag (see `search_precision`).

    A model without entities (CLIP, CLIP-FT) is scored with its global embedding only; it then
    needs explicit `candidates`."""
    catalog = embeddings.catalog
    has_regions = embeddings.region_embeds is not None
    if not has_regions and not candidates:
        raise ValueError("a model without entities needs explicit candidates (entity -> tags)")
    entities = embeddings.entities if has_regions else list(candidates)
    candidates = check_candidates(candidates or catalog_candidates(catalog, entities), entities)
    tag_embeds = candidate_embeddings(model, processor, candidates, device)
    results = {}
    for entity, tags in candidates.items():
        carried = values_carried(catalog.value_sets(entity), tags)  # [items, candidates]
        kept = carried.any(dim=1)
        truth = carried[kept]
        result: dict[str, Any] = {"items": int(kept.sum()), "candidates": len(tags), "chance": _chance(truth)}
        for source in TAG_SOURCES if has_regions else ("global",):
            scores = tag_similarities(embeddings.image_embeds, embeddings.region_embeds, entities,
                                      {entity: tag_embeds[entity]}, source)[entity][kept]  # fmt: skip
            best_carried = scores.masked_fill(~truth, float("-inf")).max(dim=1).values
            correct = best_carried > scores.masked_fill(truth, float("-inf")).max(dim=1).values
            result[source] = 100.0 * correct.float().mean().item() if len(correct) else float("nan")
            result.setdefault(f"search_precision_at_{SEARCH_TOP_K}", {})[source] = search_precision(
                scores, truth, SEARCH_TOP_K
            )
        results[entity] = result
    return results


def _chance(carried: torch.Tensor) -> float:
    """Percent right for a random pick among the candidates: the mean share of candidates an item carries."""
    if len(carried) == 0:
        return float("nan")
    return 100.0 * float(carried.float().mean(dim=1).mean())


def search_precision(scores: torch.Tensor, truth: torch.Tensor, top_k: int = 10) -> float:
    """Entity-aware search scored: each candidate tag text as a query over the items (`scores`
    `[items, tags]`, `truth` `[items]` labels or `[items, tags]` bool), the share (percent) of its
    `min(top_k, items carrying the tag)` best items that carry it, averaged over the tags that some
    item carries."""
    carried = carried_matrix(truth, scores.shape[1])
    precisions = []
    for tag in range(scores.shape[1]):
        carriers = int(carried[:, tag].sum())
        if carriers == 0:
            continue
        found = scores[:, tag].topk(min(top_k, carriers)).indices
        precisions.append(carried[found, tag].float().mean().item())
    return 100.0 * sum(precisions) / len(precisions) if precisions else float("nan")


def accuracy_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["| entity | candidates | items | regional embedding | global embedding | chance |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for entity, result in results.items():
        lines.append(
            f"| {entity} | {result['candidates']} | {result['items']} | {result['region']:.1f} | "
            f"{result['global']:.1f} | {result['chance']:.1f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def load_candidates(value: str | None, entities: Sequence[str]) -> dict[str, list[str]] | None:
    """`--candidates`: a JSON file `{"brand": ["Gucci", ...], ...}`, or a data spec or an index (a
    folder or a Milvus store) whose distinct tags of `entities` are used."""
    if value is None:
        return None
    if _is_store(value):
        from .search import open_store

        with open_store(value) as store:
            return catalog_candidates(store, entities)
    if ":" in value and not Path(value).is_file():
        from .data import open_catalog

        return catalog_candidates(open_catalog(value), entities)
    try:
        candidates = json.loads(Path(value).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"candidates file {value} does not exist") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"candidates file {value} is not valid JSON: {error}") from None
    if not isinstance(candidates, dict) or not all(isinstance(tags, list) for tags in candidates.values()):
        raise ValueError(f'candidates file {value} must hold an object of lists: {{"brand": ["Gucci", ...]}}')
    return candidates


def run(args: argparse.Namespace) -> None:
    from .evaluation.embedding import load_for_inference

    if args.image and args.candidates is None:
        raise ValueError("--image needs --candidates (a JSON file of tags per entity, or a data spec)")
    model, processor, device, dtype = load_for_inference(args.model, args.device)
    unknown = [entity for entity in args.entity or () if entity not in model.config.entities]
    if unknown:
        raise ValueError(f"--entity {unknown[0]} is not an entity of {args.model}: {model.config.entities}")
    candidates = load_candidates(args.candidates, args.entity or model.config.entities)
    if candidates is not None and args.entity:
        missing = [entity for entity in args.entity if entity not in candidates]
        if missing:
            raise ValueError(f"--entity {missing[0]}: no candidate tags for it in {args.candidates}")
        candidates = {entity: candidates[entity] for entity in args.entity}
    if args.image:
        result = _tag_images(args, model, processor, candidates)
    elif args.index:
        result = _measure_index(args, model, processor, candidates, device)
    else:
        result = _measure(args, model, processor, candidates, device, dtype)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.output}")


def _is_store(value: str) -> bool:
    from .search.milvus import is_milvus_address

    return is_milvus_address(value) or (Path(value) / "index.json").is_file()


def _tag_images(args, model, processor, candidates) -> list[dict[str, Any]]:
    from .visualization import load_images

    predictions = zero_shot_tags(model, processor, load_images(args.image), candidates, args.top_k, args.source)
    result = []
    for path, prediction in zip(args.image, predictions):
        print(path)
        for entity, scores in prediction.items():
            print(f"  {entity}: " + ", ".join(f"{score.tag} ({score.probability:.2f})" for score in scores))
        result.append(
            {"image": path, "tags": {entity: [vars(s) for s in scores] for entity, scores in prediction.items()}}
        )
    return result


def _measure(args, model, processor, candidates, device, dtype) -> dict[str, Any]:
    from .cli_options import print_notice
    from .data import open_catalog, untagged_entities_notice
    from .evaluation.cli import report_catalog_texts
    from .evaluation.embedding import embed_catalog

    catalog = open_catalog(args.data, keep_html=args.keep_html, tag_separators=args.tag_separators)
    report_catalog_texts(catalog, processor, args.data)
    entities = args.entity or model.config.entities
    print_notice(untagged_entities_notice(catalog, entities, args.data, "no tagging accuracy can be measured for it"))
    embeddings = embed_catalog(model, processor, catalog, args.batch_size, device, dtype)
    if candidates is None and args.entity:
        candidates = catalog_candidates(embeddings.catalog, args.entity)
    results = tagging_accuracy(model, processor, embeddings, candidates, device)
    print(f"zero-shot tagging top-1 accuracy (%) on {args.data}, {len(embeddings.catalog)} products:")
    print(accuracy_table(results))
    return {"model": str(args.model), "data": args.data, "accuracy": results}


def _measure_index(args, model, processor, candidates, device) -> dict[str, Any]:
    """Accuracy on the products of an index, from the embeddings it stores (the model must be the
    one that built it; its tags are the truth)."""
    from .search import model_fingerprint, open_store

    with open_store(args.index) as store:
        store.check_model(model_fingerprint(model), str(args.model))
        embeddings = StoredEmbeddings.read(store)
    if candidates is None and args.entity:
        candidates = catalog_candidates(embeddings, args.entity)
    results = tagging_accuracy(model, processor, embeddings, candidates, device)
    rows = len(embeddings.image_embeds)
    print(f"zero-shot tagging top-1 accuracy (%) on {args.index}, {rows} products (stored embeddings):")
    print(accuracy_table(results))
    return {"model": str(args.model), "index": str(args.index), "accuracy": results}
