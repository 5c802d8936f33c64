"""The differences between transformers 4.x and 5.x that code outside `modeling/` meets, in one place."""

from __future__ import annotations

from typing import Any

import torch


def projected_features(output: Any) -> torch.Tensor:
    """The embeddings `get_text_features` / `get_image_features` return: a tensor on transformers
    4.x, an output object whose `pooler_output` holds them on 5.x (for CLIPModel and E2 alike)."""
    return output.pooler_output if hasattr(output, "pooler_output") else output
