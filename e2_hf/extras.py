"""Optional dependencies: each serves one subsystem, is installed with an extra of `e2-hf`, and is
imported only where that subsystem runs, so a user of the model alone (`AutoModel`, the
processor, `E2CLIPEmbedder`) needs none of them.

    search   faiss-cpu    e2-hf index / search / compose-search / tag --index, the Space
    train    accelerate   e2-hf train, multi-process indexing
    hdf5     h5py         FashionGen HDF5 catalogs, e2-hf make-synthetic and demo
    milvus   pymilvus     a Milvus store (milvus-lite too for a Milvus Lite file)

(pyyaml, which reads YAML training configs, is a requirement of huggingface_hub: always there.)
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

# module -> (the package pip installs, the extra that brings it)
EXTRAS = {
    "faiss": ("faiss-cpu", "search"),
    "accelerate": ("accelerate", "train"),
    "h5py": ("h5py", "hdf5"),
    "pymilvus": ("pymilvus", "milvus"),
    "milvus_lite": ("milvus-lite", "milvus"),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, purpose: str) -> ModuleType:
    """`import module`, or a `MissingExtraError` saying that `purpose` needs it and which extra has it."""
    try:
        return import_module(module)
    except ImportError:
        package, extra = EXTRAS[module]
        raise MissingExtraError(
            f"{purpose} needs {package}: pip install 'e2-hf[{extra}]' (or pip install {package})"
        ) from None
