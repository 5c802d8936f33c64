"""Hugging Face Inference Endpoints handler for E2 (the custom-handler contract: the runtime builds
`EndpointHandler(path)` once and calls it with each request's deserialised body).

Request body (JSON):

    {"inputs": {"image": "<base64>", "texts": ["a shirt by Gucci"],
                "candidates": {"brand": ["Gucci", "Prada"], "season": ["FW2016", "SS2017"]}}}

Every field is optional, but an image or texts must be there. `inputs` may also be the image
itself: a base64 string, raw bytes or a PIL image (what the runtime hands over for an image body).

Response: `image_embeds` (the global embedding), `region_embeds` (`{entity: embedding}`),
`selected_patches` (`{entity: [[patch per selection token] per fusion block]}`, row-major patch
indices; absent for a model without fusion blocks), `text_embeds` (one per text) and, with
candidates, `tags` (`{entity: [{"tag", "score"}]}`, best first). Embeddings are L2-normalised
lists of floats. Bad input gives `{"error": "..."}` and the handler keeps serving: so does a
request that fails in any other way (the error is logged with its traceback).

Each request is bounded (`RequestLimits`; a deployer sets them as environment variables of the
endpoint): image pixels and aspect ratio (checked from the file's header before decoding), texts
per request, candidate tags per request and characters per text or tag. A request beyond them is
refused with an `{"error": ...}` naming the limit and its variable.

This file is copied into every saved model folder; it needs only torch, transformers and the
folder's own code, which it loads through transformers' dynamic-module mechanism.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
from typing import Any, NamedTuple

from PIL import Image
from transformers.dynamic_module_utils import get_class_from_dynamic_module

logger = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the handler cannot serve; its message goes back to the client."""


class RequestLimits(NamedTuple):  # a NamedTuple: the runtime imports this file without registering it as a module
    """What one request may ask for besides its image (whose limits are the folder's `ImageLimits`,
    set by E2_MAX_IMAGE_PIXELS and E2_MAX_IMAGE_ASPECT_RATIO). Each field is set by the environment
    variable in `ENVIRONMENT`."""

    max_texts: int = 64  # texts to embed
    max_candidates: int = 1024  # candidate tags, all entities together
    max_text_characters: int = 2048  # of each text and tag (the tokenizer keeps 77 tokens anyway)

    ENVIRONMENT = {"max_texts": "E2_MAX_TEXTS", "max_candidates": "E2_MAX_CANDIDATES",
                   "max_text_characters": "E2_MAX_TEXT_CHARACTERS"}  # fmt: skip

    @classmethod
    def from_environment(cls, environment: dict[str, str] | None = None) -> RequestLimits:
        environment = os.environ if environment is None else environment
        values = {}
        for name in cls._fields:
            variable = cls.ENVIRONMENT[name]
            if environment.get(variable):
                try:
                    values[name] = int(environment[variable])
                except ValueError:
                    raise ValueError(f"{variable} must be an integer, got {environment[variable]!r}") from None
        return cls(**values)

    def refusal(self, name: str, count: int, what: str) -> RequestError:
        limit = getattr(self, name)
        return RequestError(f"{what}: {count}, more than this endpoint's limit of {limit} ({self.ENVIRONMENT[name]})")


class EndpointHandler:
    """`EndpointHandler(path)(request)`. `limits` and `image_limits` (the folder's `ImageLimits`)
    default to the environment's settings, or to the defaults where none is set."""

    def __init__(self, path: str = "", limits: RequestLimits | None = None, image_limits: Any = None):
        self.limits = limits or RequestLimits.from_environment()
        # the folder's own code (this file ships with it, so deploying the folder trusts it). The
        # model's module first: transformers 4.x copies only a module's direct relative imports, and
        # the embedder reaches the configuration, the loss and the packaging through the model's module.
        get_class_from_dynamic_module("modeling_e2clip.E2CLIPModel", path)
        embedder_class = get_class_from_dynamic_module("embedding_e2clip.E2CLIPEmbedder", path)
        self.image_limits = image_limits or sys.modules[embedder_class.__module__].ImageLimits.from_environment()
        self.embedder = embedder_class.from_pretrained(path, trust_remote_code=True, progress=False,
                                                       image_limits=self.image_limits)  # fmt: skip

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        try:
            image, texts, candidates = self._parse(data)
            return self._respond(image, texts, candidates)
        except RequestError as error:
            return {"error": str(error)}
        except Exception as error:  # noqa: BLE001 (one request's failure must not stop the endpoint)
            logger.exception("request failed")
            return {"error": f"the request could not be served ({type(error).__name__}: {error})"}

    def _parse(self, data: Any) -> tuple[Image.Image | bytes | None, list[str], dict[str, list[str]]]:
        inputs = data.get("inputs", data) if isinstance(data, dict) else data
        if not isinstance(inputs, dict):
            inputs = {"image": inputs}
        image = _image_input(inputs["image"]) if inputs.get("image") is not None else None
        texts = inputs.get("texts") or []
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise RequestError("'texts' must be a string or a list of strings")
        if len(texts) > self.limits.max_texts:
            raise self.limits.refusal("max_texts", len(texts), "'texts' has too many texts")
        self._check_lengths(texts, "'texts'")
        candidates = inputs.get("candidates") or {}
        self._check_candidates(candidates, image)
        if image is None and not texts:
            raise RequestError("send an 'image' (base64 or bytes) and/or 'texts'")
        return image, texts, candidates

    def _check_candidates(self, candidates: Any, image: Image.Image | bytes | None) -> None:
        if not candidates:
            return
        if image is None:
            raise RequestError("'candidates' need an 'image' to tag")
        entities = self.embedder.entities
        if not isinstance(candidates, dict):
            raise RequestError("'candidates' must map entity names to lists of tag texts")
        for entity, tags in candidates.items():
            if entity not in entities:
                raise RequestError(f"unknown entity {entity!r} in 'candidates'; this model's entities are {entities}")
            if not isinstance(tags, list) or not tags or not all(isinstance(tag, str) and tag.strip() for tag in tags):
                raise RequestError(f"'candidates' of {entity!r} must be a non-empty list of tag texts")
            self._check_lengths(tags, f"'candidates' of {entity!r}")
        count = sum(len(tags) for tags in candidates.values())
        if count > self.limits.max_candidates:
            raise self.limits.refusal("max_candidates", count, "'candidates' has too many tags")

    def _check_lengths(self, texts: list[str], where: str) -> None:
        longest = max((len(text) for text in texts), default=0)
        if longest > self.limits.max_text_characters:
            raise self.limits.refusal("max_text_characters", longest, f"a text in {where} is too long (characters)")

    def _respond(self, image: Image.Image | bytes | None, texts: list[str], candidates: dict[str, list[str]]) -> dict:
        response: dict[str, Any] = {}
        if image is not None:
            try:
                embeddings = self.embedder.embed_images([image])
            except ValueError as error:  # the bytes are no image, or one beyond the limits
                # by name: transformers 4.x re-executes the folder's modules as it loads the
                # processor, so the class this file could hold is not the one raised
                if type(error).__name__ == "ImageSizeError":
                    raise RequestError(f"'image' is refused: {error} (limits: E2_MAX_IMAGE_PIXELS, "
                                       "E2_MAX_IMAGE_ASPECT_RATIO)") from None  # fmt: skip
                raise RequestError(f"'image' is not a readable image ({error})") from None
            response["image_embeds"] = embeddings.image_embeds[0].tolist()
            if embeddings.region_embeds is not None:
                response["region_embeds"] = {
                    entity: embeddings.region(entity)[0].tolist() for entity in embeddings.entities
                }
            if embeddings.selection_indices is not None:  # none without fusion blocks
                response["selected_patches"] = {
                    entity: embeddings.selected_patches(entity)[0].tolist() for entity in embeddings.entities
                }
            if candidates:
                probabilities = self.embedder.tag_probabilities(embeddings, candidates)
                response["tags"] = {entity: _ranked(candidates[entity], scores[0].tolist())
                                    for entity, scores in probabilities.items()}  # fmt: skip
        if texts:
            response["text_embeds"] = self.embedder.embed_texts(texts).tolist()
        return response


def _image_input(value: Any) -> Image.Image | bytes:
    """A PIL image, raw bytes or a base64 string (optionally a `data:` URI) -> a PIL image or the
    file's bytes (the embedder decodes them, upright and RGB, as every E2 tool does)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, str):
        try:
            value = base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("'image' is not valid base64") from None
    if not isinstance(value, (bytes, bytearray)):
        raise RequestError(f"'image' must be base64 text or bytes, got {type(value).__name__}")
    return bytes(value)


def _ranked(tags: list[str], scores: list[float]) -> list[dict[str, Any]]:
    order = sorted(range(len(tags)), key=lambda column: -scores[column])
    return [{"tag": tags[column], "score": scores[column]} for column in order]
