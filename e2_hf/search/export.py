"""An index as a Hugging Face dataset: Parquet files that `datasets.load_dataset` reads and that can
be pushed as a Hub dataset repo, to load into whatever vector database a user runs.

One row per product: `product_id`, `description`, `source`, `tags` (one string field per entity),
`multi_values` (one list per entity), `image_embeds` and one `region_embeds_<entity>` column per
entity (float32, L2-normalised, fixed length)."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from .index import EmbeddingIndex

DATA_PATTERN = "data/train-{:05d}-of-{:05d}.parquet"


def export_dataset(index: EmbeddingIndex, folder: str | Path) -> list[Path]:
    """Writes `index` to `folder` (new or empty): one Parquet file per shard and a dataset card.
    Returns the Parquet files."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("exporting a dataset needs pyarrow: pip install 'e2-hf[hf]'") from None
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty: export a dataset into a new or empty folder")
    tag_entities = index.tag_entities
    schema = _schema(pa, index, tag_entities)
    written, first_row, shards = [], 0, index.metadata["shards"]
    for number, (handle, shard) in enumerate(tqdm(list(zip(index.shards, shards)), desc="exporting", unit="shard")):
        items = index.items[first_row : first_row + shard["rows"]]
        columns = {
            "product_id": [item.product_id for item in items],
            "description": [item.description for item in items],
            "source": [item.source for item in items],
            "tags": [{entity: item.tags.get(entity) for entity in tag_entities} for item in items],
            "multi_values": [{entity: list(item.values_of(entity)) for entity in tag_entities} for item in items],
        }
        for target in index.targets:
            vectors = handle.get_slice(index.tensor_name(target))[:].float().numpy()  # [rows, dim]
            array = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), index.dim)
            columns[_column(target)] = array
        path = folder / DATA_PATTERN.format(number, len(shards))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns, schema=schema), path)
        written.append(path)
        first_row += shard["rows"]
    (folder / "README.md").write_text(_card(index), encoding="utf-8")
    return written


def _column(target: str | None) -> str:
    return "image_embeds" if target is None else f"region_embeds_{target}"


def _schema(pa, index: EmbeddingIndex, tag_entities: list[str]):
    vector = pa.list_(pa.float32(), index.dim)
    fields = [
        ("product_id", pa.string()),
        ("description", pa.string()),
        ("source", pa.string()),
        ("tags", pa.struct([(entity, pa.string()) for entity in tag_entities])),
        ("multi_values", pa.struct([(entity, pa.list_(pa.string())) for entity in tag_entities])),
    ]
    return pa.schema(fields + [(_column(target), vector) for target in index.targets])


def _card(index: EmbeddingIndex) -> str:
    tag_entities = ", ".join(index.tag_entities)
    if index.entities:
        regions = ", ".join(f"`{_column(entity)}`" for entity in index.entities)
        vectors = f"`image_embeds` (global) and {regions} (regional)"
        choice = f'# the global embedding, or a region column such as "{_column(index.entities[0])}"\n'
    else:
        vectors, choice = "`image_embeds` (global; the model has no entities, so no regional columns)", ""
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
tags:
- e2-hf
- embeddings
---

# Product embeddings of an E2 index

{len(index)} products embedded by `{index.metadata["model"]}` (fingerprint `{index.metadata["model_fingerprint"]}`).
Columns: `product_id`, `description`, `source`, `tags` and `multi_values` (per entity: {tag_entities}),
{vectors}: {index.dim} float32 values each, L2-normalised, so the inner product is the cosine similarity.

```python
import faiss
from datasets import load_dataset

products = load_dataset("PATH_OR_REPO", split="train")
{choice}products.add_faiss_index(column="image_embeds", metric_type=faiss.METRIC_INNER_PRODUCT)
```
"""
