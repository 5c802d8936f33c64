"""E2CLIPProcessor: CLIP's image processor and tokenizer, plus the tag entities of E2.

`processor(text=..., images=..., tags=..., return_tensors="pt")` returns the inputs of
`E2CLIPModel.forward`. It saves itself in the file layout that transformers 4.46 to 5.x all load:
a flat `preprocessor_config.json`, `vocab.json` + `merges.txt` (and `tokenizer.json`), and a
`processor_config.json` holding E2's own settings.

This file is copied into every Hub checkpoint: it imports only the standard library, torch,
numpy/PIL (transformers' own image dependencies) and transformers.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import BatchEncoding, CLIPTokenizerFast

# transformers 5.x splits CLIP's image processor into a torchvision and a PIL backend; the PIL one
# needs nothing beyond transformers' own dependencies. 4.x has only `CLIPImageProcessor` (PIL).
CLIPImageProcessor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor

PROCESSOR_CONFIG_NAME = "processor_config.json"
IMAGE_PROCESSOR_CONFIG_NAME = "preprocessor_config.json"
DEFAULT_PRODUCT_TEXT_FIELDS = ("composition", "subcategory", "brand", "season", "description")
AUTO_PROCESSOR_ENTRY = "processing_e2clip.E2CLIPProcessor"
# CLIP's normalisation constants (OpenAI's image statistics).
CLIP_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def clip_image_processor(image_size: int = 224) -> CLIPImageProcessor:
    """CLIP's preprocessing for square images of `image_size` pixels: resize the short side,
    centre-crop, rescale to [0, 1], normalise with CLIP's mean and std."""
    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=CLIP_IMAGE_MEAN,
        image_std=CLIP_IMAGE_STD,
    )


def to_rgb_image(image: Any) -> Image.Image:
    """Any PIL image (L, LA, P, RGBA, CMYK, I;16, ...) or array -> an RGB PIL image.

    Transparent pixels are composited on white (product photos on a transparent background).
    Arrays may be `[H, W]`, `[H, W, C]` or `[C, H, W]` with C in 1, 3, 4; integers (uint8, or
    16-bit) or floats in [0, 1].
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"images must be PIL images or numpy arrays, got {type(image).__name__}.")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(_scale_to_uint8(pixels), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype.kind == "f" and pixels.max(initial=0.0) <= 1.0:
        return np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if pixels.max(initial=0) > 255:  # 16-bit data
        return np.clip(pixels / 257.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # [C, H, W] -> [H, W, C]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"image arrays must be [H, W], [H, W, C] or [C, H, W] with C in (1, 3, 4); got {array.shape}.")
    pixels = _scale_to_uint8(np.asarray(array))
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[pixels.ndim if pixels.ndim == 2 else pixels.shape[-1]]
    return Image.fromarray(pixels, mode=mode)


def build_product_text(
    description: str | None,
    tags: Mapping[str, str | None] | None = None,
    fields: Sequence[str] = DEFAULT_PRODUCT_TEXT_FIELDS,
    separator: str = ". ",
) -> str:
    """The paper's product text: tags before the description.

    With the default `fields` this is `composition. sub-category. brand. season. description`
    (spec, section 2). Missing or empty fields are left out with their separator.

    >>> build_product_text("Slim shirt in poplin", {"brand": "Gucci", "season": "FW2016"})
    'Gucci. FW2016. Slim shirt in poplin'
    """
    values = dict(tags or {})
    values["description"] = description
    parts = [str(values[name]).strip() for name in fields if _is_present(values.get(name))]
    return separator.join(part.rstrip(". ") if i < len(parts) - 1 else part for i, part in enumerate(parts))


def _is_present(tag: Any) -> bool:
    return tag is not None and str(tag).strip() != ""


class E2CLIPProcessor:
    """Tokenizer + image processor + E2's tag entities.

    Args:
        image_processor: a `CLIPImageProcessor` (see `clip_image_processor`).
        tokenizer: a CLIP tokenizer.
        entities: the ordered entity names of the model (`E2CLIPConfig.entities`).
        product_text_fields: field order of `build_product_text`.
        max_length: truncation length of texts and tags; defaults to the tokenizer's
            `model_max_length` when that is a real number, else 77.
    """

    attributes = ["image_processor", "tokenizer"]
    _auto_class = "AutoProcessor"
    model_input_names = ["input_ids", "attention_mask", "pixel_values", "tag_input_ids", "tag_attention_mask"]

    def __init__(
        self,
        image_processor: CLIPImageProcessor,
        tokenizer: Any,
        entities: Sequence[str] = (),
        product_text_fields: Sequence[str] = DEFAULT_PRODUCT_TEXT_FIELDS,
        max_length: int | None = None,
    ):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.entities = list(entities)
        self.product_text_fields = list(product_text_fields)
        if max_length is None:
            model_max_length = getattr(tokenizer, "model_max_length", None)
            max_length = model_max_length if isinstance(model_max_length, int) and model_max_length < 10_000 else 77
        self.max_length = max_length

    # ------------------------------------------------------------------ calling
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images: Any = None,
        tags: Sequence[Mapping[str, str | None]] | Mapping[str, Sequence[str | None]] | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenizes `text`, preprocesses `images` and tokenizes `tags`.

        `tags` is one dict per item (`[{"brand": "Gucci", "season": "FW2016"}, ...]`) or one dict
        of lists (`{"brand": ["Gucci", ...], ...}`), keyed by entity name. A tag that is absent,
        `None` or blank is missing: its row of `tag_attention_mask` is all zero. Tags are padded to
        the longest tag of the batch.
        """
        if text is None and images is None and tags is None:
            raise ValueError("E2CLIPProcessor needs text, images or tags.")
        if kwargs:
            unexpected = ", ".join(sorted(kwargs))
            raise ValueError(f"E2CLIPProcessor got unexpected arguments: {unexpected}.")
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self._tokenize(text, padding))
        if images is not None:
            data["pixel_values"] = self.preprocess_images(images)
        if tags is not None:
            data.update(self.tokenize_tags(tags))
        return BatchEncoding(data, tensor_type=return_tensors)

    def _tokenize(self, text: str | Sequence[str], padding: bool | str = True) -> dict[str, Any]:
        if isinstance(text, str):
            text = [text]
        encoded = self.tokenizer(
            list(text), padding=padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def preprocess_images(self, images: Any) -> torch.Tensor:
        """One image or a list of images (any PIL mode, or arrays) -> `[batch, 3, size, size]`."""
        if isinstance(images, (Image.Image, np.ndarray)) or (isinstance(images, torch.Tensor) and images.ndim <= 3):
            images = [images]
        rgb_images = [to_rgb_image(image) for image in images]
        return self.image_processor(images=rgb_images, return_tensors="pt")["pixel_values"]

    def tokenize_tags(
        self, tags: Sequence[Mapping[str, str | None]] | Mapping[str, Sequence[str | None]]
    ) -> dict[str, torch.Tensor]:
        """Tag texts -> `tag_input_ids`, `tag_attention_mask` of shape `[batch, num_entities, tag_length]`."""
        per_item = self._tags_per_item(tags)
        batch_size, num_entities = len(per_item), len(self.entities)
        flat = [item.get(entity) for item in per_item for entity in self.entities]
        present = [index for index, tag in enumerate(flat) if _is_present(tag)]
        tag_length = 1
        encoded = None
        if present:
            encoded = self.tokenizer(
                [str(flat[index]).strip() for index in present],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            tag_length = encoded["input_ids"].shape[1]
        pad_id = self.tokenizer.pad_token_id or 0
        tag_input_ids = torch.full((batch_size * num_entities, tag_length), pad_id, dtype=torch.long)
        tag_attention_mask = torch.zeros((batch_size * num_entities, tag_length), dtype=torch.long)
        if encoded is not None:
            rows = torch.tensor(present, dtype=torch.long)
            tag_input_ids[rows] = encoded["input_ids"]
            tag_attention_mask[rows] = encoded["attention_mask"].long()
        return {
            "tag_input_ids": tag_input_ids.view(batch_size, num_entities, tag_length),
            "tag_attention_mask": tag_attention_mask.view(batch_size, num_entities, tag_length),
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

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    # ------------------------------------------------------------------ saving and loading
    def to_dict(self) -> dict[str, Any]:
        return {
            "processor_class": type(self).__name__,
            "auto_map": {"AutoProcessor": AUTO_PROCESSOR_ENTRY},
            "entities": self.entities,
            "product_text_fields": self.product_text_fields,
            "max_length": self.max_length,
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Writes `processor_config.json`, a flat `preprocessor_config.json`, the tokenizer with
        `vocab.json` + `merges.txt`, and this code file."""
        os.makedirs(save_directory, exist_ok=True)
        files = list(self.tokenizer.save_pretrained(save_directory))
        files += _write_vocab_and_merges(self.tokenizer, save_directory)
        _drop_runtime_keys(os.path.join(save_directory, "tokenizer_config.json"))
        files.append(save_image_processor(self.image_processor, save_directory, processor_class=type(self).__name__))
        files.append(_write_json(os.path.join(save_directory, PROCESSOR_CONFIG_NAME), self.to_dict()))
        source = os.path.abspath(__file__)
        target = os.path.join(save_directory, os.path.basename(source))
        if os.path.abspath(target) != source:
            shutil.copyfile(source, target)
            files.append(target)
        return [str(name) for name in files]

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Called by transformers when this class was loaded as remote code; `save_pretrained`
        always copies this file and writes the `AutoProcessor` entry."""
        cls._auto_class = auto_class

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> E2CLIPProcessor:
        """Loads a folder or Hub repo saved by `save_pretrained` (or any CLIP repo, with `entities=`)."""
        entities = kwargs.pop("entities", None)
        kwargs.pop("trust_remote_code", None)
        hub_kwargs = {
            key: kwargs.pop(key)
            for key in ("cache_dir", "revision", "token", "local_files_only", "subfolder", "force_download")
            if key in kwargs
        }
        settings = _read_json_file(pretrained_model_name_or_path, PROCESSOR_CONFIG_NAME, hub_kwargs) or {}
        image_processor = CLIPImageProcessor.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        # The explicit class: AutoTokenizer would consult config.json, whose model type is remote code.
        tokenizer = CLIPTokenizerFast.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        return cls(
            image_processor,
            tokenizer,
            entities=entities if entities is not None else settings.get("entities", ()),
            product_text_fields=settings.get("product_text_fields", DEFAULT_PRODUCT_TEXT_FIELDS),
            max_length=kwargs.pop("max_length", settings.get("max_length")),
        )

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Saves to a temporary folder and uploads it with huggingface_hub."""
        import tempfile

        from huggingface_hub import HfApi

        commit_message = kwargs.pop("commit_message", "Upload E2CLIPProcessor")
        api = HfApi(token=kwargs.pop("token", None))
        api.create_repo(repo_id, private=kwargs.pop("private", None), exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, **kwargs)

    def __repr__(self) -> str:
        tokenizer = type(self.tokenizer).__name__
        return f"{type(self).__name__}(entities={self.entities}, max_length={self.max_length}, tokenizer={tokenizer})"


def save_image_processor(
    image_processor: Any, save_directory: str | os.PathLike, processor_class: str | None = None
) -> str:
    """Writes a flat `preprocessor_config.json` that transformers 4.46 to 5.x all read, naming
    `CLIPImageProcessor` (5.x picks its backend from what is installed)."""
    os.makedirs(save_directory, exist_ok=True)
    image_config = json.loads(image_processor.to_json_string())  # JSON-safe (enums as ints)
    image_config["image_processor_type"] = "CLIPImageProcessor"
    image_config.pop("backend", None)
    if processor_class is not None:
        image_config.update(processor_class=processor_class, auto_map={"AutoProcessor": AUTO_PROCESSOR_ENTRY})
    return _write_json(os.path.join(save_directory, IMAGE_PROCESSOR_CONFIG_NAME), image_config)


def _write_json(path: str, content: dict[str, Any]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def _drop_runtime_keys(tokenizer_config_path: str) -> None:
    """transformers 5.x records how the tokenizer was loaded (`is_local`, ...); those facts are
    about this machine, not the tokenizer, and older versions would pass them to `__init__`."""
    if not os.path.exists(tokenizer_config_path):
        return
    with open(tokenizer_config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    for key in ("backend", "is_local", "local_files_only", "name_or_path"):
        config.pop(key, None)
    _write_json(tokenizer_config_path, config)


def _write_vocab_and_merges(tokenizer: Any, save_directory: str | os.PathLike) -> list[str]:
    """Makes sure the slow-tokenizer files exist (transformers 5.x saves only `tokenizer.json`)."""
    vocab_path = os.path.join(save_directory, "vocab.json")
    merges_path = os.path.join(save_directory, "merges.txt")
    if os.path.exists(vocab_path) and os.path.exists(merges_path):
        return []
    tokenizer_json = os.path.join(save_directory, "tokenizer.json")
    with open(tokenizer_json, encoding="utf-8") as handle:
        model = json.load(handle)["model"]
    vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
    _write_json(vocab_path, dict(vocab))
    with open(merges_path, "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n")
        for merge in model["merges"]:
            handle.write((" ".join(merge) if isinstance(merge, list) else merge) + "\n")
    return [vocab_path, merges_path]


def _read_json_file(name_or_path: str | os.PathLike, filename: str, hub_kwargs: dict[str, Any]) -> dict | None:
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, hub_kwargs.get("subfolder") or "", filename)
        if not os.path.exists(path):
            return None
    else:
        from transformers.utils import cached_file

        path = cached_file(
            str(name_or_path),
            filename,
            _raise_exceptions_for_missing_entries=False,
            **hub_kwargs,
        )
        if path is None:
            return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


__all__ = ["E2CLIPProcessor", "build_product_text", "clip_image_processor", "save_image_processor", "to_rgb_image"]
