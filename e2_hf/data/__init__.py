"""Data readers (FashionGen, AmazonFashion, JSONL/CSV, datasets) and batching for E2."""

from .catalogs import (
    AmazonCatalog,
    Catalog,
    CsvCatalog,
    FashionGenCatalog,
    HFDatasetCatalog,
    ImageLoadError,
    JsonlCatalog,
    Product,
    open_catalog,
    parse_spec,
)
from .loading import E2Collator, ProductDataset

__all__ = [
    "AmazonCatalog",
    "Catalog",
    "CsvCatalog",
    "E2Collator",
    "FashionGenCatalog",
    "HFDatasetCatalog",
    "ImageLoadError",
    "JsonlCatalog",
    "Product",
    "ProductDataset",
    "open_catalog",
    "parse_spec",
]
