"""E2CLIPProcessor: CLIP's image processor and tokenizer, plus the tag entities of E2.

A `transformers.ProcessorMixin`: saving, loading, `push_to_hub`, `return_tensors` and the typed
per-modality kwargs (`text_kwargs`, `images_kwargs`) are transformers' own. E2 adds `tags`, one text per
entity and item, tokenized into `tag_input_ids` / `tag_attention_mask` for the region loss, and the
paper's product text (`build_product_text`).

This file is copied into every Hub checkpoint: it imports only the standard library, torch,
numpy/PIL (transformers' own image dependencies) and transformers.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import BatchFeature
from transformers.processing_utils import ImagesKwargs, ProcessingKwargs, ProcessorMixin

from .image_processing_e2clip import E2CLIPImageProcessor

DEFAULT_PRODUCT_TEXT_FIELDS = ("composition", "subcategory", "brand", "season", "description")
CLIP_CONTEXT_LENGTH = 77


# No `from __future__ import annotations` here: transformers reads these TypedDicts' annotations at run time.
class E2CLIPImagesKwargs(ImagesKwargs, total=False):
    image_fit: str
    pad_color: tuple[int, int, int]


class E2CLIPProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: E2CLIPImagesKwargs
    # Batches of texts become one tensor: pad to the longest, truncate at the context length.
    _defaults = {
        "text_kwargs": {"padding": True, "truncation": True},
        "common_kwargs": {"return_tensors": "pt"},
    }


def build_product_text(
    description: str | None,
    tags: Mapping[str, str | None] | None = None,
    fields: Sequence[str] = DEFAULT_PRODUCT_TEXT_FIELDS,
    separator: str = ". ",
) -> str:
    """The paper's product text: tags before the description.

    With the default `fields` this is `composition. sub-category. brand. season. description`.
    Missing or empty fields are left out with their separator.

    >>> build_product_text("Slim shirt in poplin", {"brand": "Gucci", "season": "FW2016"})
    'Gucci. FW2016. Slim shirt in poplin'
    """
    values = dict(tags or {})
    values["description"] = description
    parts = [str(values[name]).strip() for name in fields if _is_present(values.get(name))]
    return separator.join(part.rstrip(". ") if i < len(parts) - 1 else part for i, part in enumerate(parts))


def _is_present(tag: Any) -> bool:
    return tag is not None and str(tag).strip() != ""


class E2CLIPProcessor(ProcessorMixin):
    """CLIP's processor (an `E2CLIPImageProcessor` and a CLIP tokenizer) plus E2's tag entities.

    Args:
        image_processor: an `E2CLIPImageProcessor`; a plain `CLIPImageProcessor` is converted to one
            with the same settings (`image_fit="crop"`, CLIP's own framing).
        tokenizer: a CLIP tokenizer.
        entities: the ordered entity names of the model (`E2CLIPConfig.entities`).
        product_text_fields: field order of `build_product_text`.
        max_length: truncation length of texts and tags; defaults to the tokenizer's
            `model_max_length` when that is a real number, else CLIP's 77.
    """

    # transformers 4.x names the sub-processors and their classes here; 5.x reads them from `__init__`.
    attributes = ["image_processor", "tokenizer"]
    if not hasattr(ProcessorMixin, "get_attributes"):
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        image_processor: E2CLIPImageProcessor | None = None,
        tokenizer: Any = None,
        entities: Sequence[str] = (),
        product_text_fields: Sequence[str] = DEFAULT_PRODUCT_TEXT_FIELDS,
        max_length: int | None = None,
        **kwargs: Any,
    ):
        if image_processor is not None and not isinstance(image_processor, E2CLIPImageProcessor):
            image_processor = E2CLIPImageProcessor.from_dict(image_processor.to_dict())
        self.entities = list(entities)
        self.product_text_fields = list(product_text_fields)
        if max_length is None:
            model_max_length = getattr(tokenizer, "model_max_length", None)
            sane = isinstance(model_max_length, int) and model_max_length < 10_000
            max_length = model_max_length if sane else CLIP_CONTEXT_LENGTH
        self.max_length = max_length
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        tags: Sequence[Mapping[str, str | None]] | Mapping[str, Sequence[str | None]] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Preprocesses `images`, tokenizes `text` and tokenizes `tags` into the inputs of `E2CLIPModel`.

        `tags` is one dict per item (`[{"brand": "Gucci", "season": "FW2016"}, ...]`) or one dict
        of lists (`{"brand": ["Gucci", ...], ...}`), keyed by entity name. A tag that is absent,
        `None` or blank is missing: its row of `tag_attention_mask` is all zero. Tags are padded to
        the longest tag of the batch.

        Other keyword arguments are transformers' processor kwargs, flat or per modality
        (`text_kwargs={...}`, `images_kwargs={"image_fit": "pad"}`); `return_tensors` defaults to
        `"pt"` and may be `"np"` or `None` (lists).
        """
        if images is None and text is None and tags is None:
            raise ValueError("E2CLIPProcessor needs text, images or tags.")
        merged = self._merge_kwargs(E2CLIPProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs, images_kwargs = merged["text_kwargs"], merged["images_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", None)
        images_kwargs.pop("return_tensors", None)
        text_kwargs.setdefault("max_length", self.max_length)
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self.tokenizer(text, **text_kwargs))
        if images is not None:
            data.update(self.image_processor(images, **images_kwargs))
        if tags is not None:
            data.update(self.tokenize_tags(tags, max_length=text_kwargs["max_length"]))
        return BatchFeature(data, tensor_type=return_tensors)

    def tokenize_tags(
        self,
        tags: Sequence[Mapping[str, str | None]] | Mapping[str, Sequence[str | None]],
        max_length: int | None = None,
    ) -> dict[str, list[list[list[int]]]]:
        """Tag texts -> `tag_input_ids`, `tag_attention_mask` as nested lists `[batch][entity][tag_length]`."""
        per_item = self._tags_per_item(tags)
        flat = [item.get(entity) for item in per_item for entity in self.entities]
        present = [str(tag).strip() for tag in flat if _is_present(tag)]
        encoded = iter([])
        tag_length = 1
        if present:
            tokenized = self.tokenizer(present, padding=True, truncation=True, max_length=max_length or self.max_length)
            tag_length = len(tokenized["input_ids"][0])
            encoded = zip(tokenized["input_ids"], tokenized["attention_mask"])
        missing = ([self.tokenizer.pad_token_id or 0] * tag_length, [0] * tag_length)
        rows = [next(encoded) if _is_present(tag) else missing for tag in flat]
        num_entities = len(self.entities)
        by_item = [rows[start : start + num_entities] for start in range(0, len(rows), num_entities)]
        return {
            "tag_input_ids": [[list(ids) for ids, _ in item] for item in by_item],
            "tag_attention_mask": [[list(mask) for _, mask in item] for item in by_item],
        }

    def _tags_per_item(self, tags) -> list[Mapping[str, Any]]:
        if not self.entities:
            raise ValueError("This processor has no entities (the model is plain CLIP); tags cannot be used.")
        if isinstance(tags, Mapping):
            self._check_entity_names(tags.keys())
            lengths = {name: len(values) for name, values in tags.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"tags given as a dict of lists must have lists of one length; got {lengths}.")
            batch_size = next(iter(lengths.values()), 0)
            return [{name: values[index] for name, values in tags.items()} for index in range(batch_size)]
        per_item = list(tags)
        for row, item in enumerate(per_item):
            if not isinstance(item, Mapping):
                raise ValueError(f"tags[{row}] must be a dict keyed by entity name, got {type(item).__name__}.")
            self._check_entity_names(item.keys(), row)
        return per_item

    def _check_entity_names(self, names, row: int | None = None) -> None:
        unknown = sorted(set(names) - set(self.entities))
        if unknown:
            where = f"tags[{row}]" if row is not None else "tags"
            raise ValueError(f"{where} has unknown entities {unknown}; this model's entities are {self.entities}.")

    def build_product_text(self, description: str | None, tags: Mapping[str, str | None] | None = None) -> str:
        """`build_product_text` with this processor's field order."""
        return build_product_text(description, tags, self.product_text_fields)

    @property
    def model_input_names(self) -> list[str]:
        return [*super().model_input_names, "tag_input_ids", "tag_attention_mask"]


__all__ = ["E2CLIPProcessor", "build_product_text"]
