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
    clean_tag,
    open_catalog,
    parse_spec,
    untagged_entities_notice,
)
from .loading import E2Collator, ProductDataset, TruncationReport, dataset_truncation, truncation_report

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
    "TruncationReport",
    "clean_tag",
    "dataset_truncation",
    "open_catalog",
    "parse_spec",
    "truncation_report",
    "untagged_entities_notice",
]
