"""Text-guided image retrieval, training-free (as CIReVL): caption the reference image, rewrite the
caption with the requested modification, and search the index with the rewritten text.

The rewriter is pluggable: any callable `(caption, modification) -> text`. CIReVL prompts an LLM
("rewrite this caption so that it ..."); `load_rewriter("my_module:rewrite")` plugs in such a
function, one that calls the LLM the user runs. The built-in `TagRewriter` needs no model: it finds
the tag value the modification names among the index's tags ("in FW2016", "by Aurel") and puts it
in place of the caption's value of the same entity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from ..captioning.inference import caption_images
from ..captioning.metrics import named_values
from .index import EmbeddingIndex
from .query import SearchHit, search_texts

Rewriter = Callable[[str, str], str]


class RewriterError(ValueError):
    """A rewriter that failed or returned no text; the message names the query."""


@dataclass
class TagRewriter:
    """Rule-based rewriting by entity tags.

    `vocabulary` maps each entity to its known values (`from_index` reads them from an index). The
    modification's value is the longest known value it names; the caption's values of that entity
    are replaced by it, or it is appended when the caption names none. A modification that names
    no known value is appended as it is.
    """

    vocabulary: Mapping[str, Sequence[str]]

    @classmethod
    def from_index(cls, index: EmbeddingIndex) -> TagRewriter:
        values: dict[str, set[str]] = {}
        for item in index.items:
            for entity in item.tags:
                values.setdefault(entity, set()).update(item.values_of(entity))
        return cls({entity: sorted(found) for entity, found in values.items() if found})

    def requested(self, modification: str) -> tuple[str, str] | None:
        """`(entity, value)` the modification asks for: the longest known value it names."""
        found = [(len(value), entity, value) for entity, values in self.vocabulary.items()
                 for value in named_values(modification, values)]  # fmt: skip
        if not found:
            return None
        _, entity, value = max(found)
        return entity, value

    def __call__(self, caption: str, modification: str) -> str:
        request = self.requested(modification)
        if request is None:
            return f"{caption.rstrip('. ')}. {modification.strip()}"
        entity, value = request
        rewritten = caption
        for old in named_values(caption, self.vocabulary[entity]):
            rewritten = re.sub(rf"(?<!\w){re.escape(old)}(?!\w)", value, rewritten, flags=re.IGNORECASE)
        if rewritten == caption and not named_values(caption, [value]):
            rewritten = f"{caption.rstrip('. ')}. {value}"
        return rewritten


def load_rewriter(reference: str) -> Rewriter:
    """The function `MODULE:NAME` (imported: the user asked for that code to run)."""
    module_name, _, name = reference.partition(":")
    if not module_name or not name:
        raise RewriterError(f"--rewriter must be MODULE:FUNCTION, e.g. my_rewriter:rewrite; got {reference!r}")
    try:
        rewriter = getattr(import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise RewriterError(f"cannot load the rewriter {reference}: {error}") from None
    if not callable(rewriter):
        raise RewriterError(f"the rewriter {reference} is a {type(rewriter).__name__}, not a function")
    return rewriter


def rewrite(rewriter: Rewriter, caption: str, modification: str, query_name: str) -> str:
    """`rewriter(caption, modification)`, its failure reported with the query that caused it."""
    try:
        text = rewriter(caption, modification)
    except Exception as error:  # a user's hook: whatever it raises is reported with the query
        raise RewriterError(f"the rewriter failed on {query_name} (caption {caption!r}, modification "
                            f"{modification!r}): {type(error).__name__}: {error}") from error  # fmt: skip
    if not isinstance(text, str) or not text.strip():
        raise RewriterError(f"the rewriter returned {text!r} for {query_name} (caption {caption!r}, modification "
                            f"{modification!r}); it must return the rewritten text")  # fmt: skip
    return text


@dataclass
class ComposedResult:
    caption: str  # of the reference image
    rewritten: str  # the text searched
    hits: list[SearchHit]

    def to_json(self) -> dict[str, Any]:
        return {"caption": self.caption, "rewritten": self.rewritten, "hits": [hit.to_json() for hit in self.hits]}


def compose_search(model, processor, captioner, index: EmbeddingIndex, reference_images: Sequence[Any],
                   modifications: Sequence[str], entity: str | None = None, top_k: int = 10,
                   rewriter: Rewriter | None = None, num_beams: int = 1,
                   query_names: Sequence[str] | None = None) -> list[ComposedResult]:  # fmt: skip
    """For each reference image and modification: caption, rewrite, and search by the global
    embedding (`entity=None`) or `entity`'s regional embeddings. `rewriter` defaults to the
    index's `TagRewriter`."""
    if len(reference_images) != len(modifications):
        raise ValueError(f"{len(reference_images)} reference images for {len(modifications)} modifications")
    rewriter = rewriter or TagRewriter.from_index(index)
    names = query_names or [f"query {position + 1}" for position in range(len(modifications))]
    captions = caption_images(captioner, model, processor, reference_images, num_beams)
    texts = [rewrite(rewriter, caption, modification, name)
             for caption, modification, name in zip(captions, modifications, names)]  # fmt: skip
    results = search_texts(model, processor, index, texts, entity, top_k)
    return [ComposedResult(caption, text, hits) for caption, text, hits in zip(captions, texts, results)]
