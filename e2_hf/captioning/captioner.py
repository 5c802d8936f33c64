"""A zero-shot captioner on E2 (or CLIP-FT) embeddings: a causal decoder conditioned on prefix tokens.

Trained on texts only. A frozen backbone embeds each product text; a small mapping network turns
the L2-normalised embedding into `prefix_length` vectors of the decoder's width; the decoder learns
to write the text after them. At inference an *image* embedding takes the text's place, since the
contrastive training put both in one space. Two recipes close the gap between the modalities:

- CapDec: Gaussian noise (variance `noise_variance`, CapDec's default 0.016) is added to the text
  embedding in training, so the decoder learns to read a neighbourhood of each text; the image
  embedding is decoded as it is.
- DeCap: the decoder is trained on clean text embeddings, and the image embedding is replaced by a
  combination of a memory of training text embeddings, weighted by the softmax of the cosine
  similarities over `memory_temperature`, so the decoder reads a point of the text distribution.

A captioner folder holds `captioner_config.json`, `decoder/` (the causal LM and its tokenizer, as
`save_pretrained` writes them), `mapping.safetensors` and, for DeCap, `memory.safetensors`.
Loading one reads JSON, tokenizer files and safetensors only: the decoder must be one of
transformers' own classes (a folder whose config asks for its own code, `auto_map`, is refused,
and no prompt to run it can appear), and every file is checked (names, shapes, dtypes, finite
values, token ids inside the vocabulary) with errors naming it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CaptionerError
from .arguments import RECIPES

CONFIG_NAME = "captioner_config.json"
DECODER_FOLDER = "decoder"
MAPPING_FILE = "mapping.safetensors"
MEMORY_FILE = "memory.safetensors"
FORMAT_VERSION = 1
END_TOKEN = "<|endoftext|>"  # of the tokenizer a from-scratch decoder learns (GPT-2's name for it)


# the sizes a captioner config may hold: beyond them it is damaged or crafted (an embedding size of
# 10^12 would allocate the mapping network before any weight is read)
CONFIG_RANGES = (("embedding_dim", int, (1, 65_536)), ("prefix_length", int, (1, 1_024)),
                 ("max_caption_tokens", int, (1, 65_536)), ("noise_variance", (int, float), (0, 1e6)),
                 ("memory_temperature", (int, float), (0, 1e6)), ("format_version", int, (0, 1_000)))  # fmt: skip


@dataclass
class CaptionerConfig:
    """What a captioner folder needs besides its weights.

    `backbone_fingerprint` and `embedding_dim` tie the captioner to the model whose embeddings it
    was trained on: another model's embeddings live in another space and are refused.
    """

    recipe: str
    embedding_dim: int
    prefix_length: int
    backbone_name: str
    backbone_fingerprint: str
    noise_variance: float = 0.016
    memory_temperature: float = 0.01
    max_caption_tokens: int = 64
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise CaptionerError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        for name, kind, (low, high) in CONFIG_RANGES:
            value = getattr(self, name)
            if not isinstance(value, kind) or isinstance(value, bool) or not low <= value <= high:
                raise CaptionerError(f"{name} must be a number from {low} to {high}, got {value!r}")
        for name in ("backbone_name", "backbone_fingerprint"):
            if not isinstance(getattr(self, name), str):
                raise CaptionerError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.memory_temperature <= 0:
            raise CaptionerError(f"memory_temperature must be positive, got {self.memory_temperature}")


class PrefixMapping(nn.Module):
    """`[batch, embedding_dim]` -> `[batch, prefix_length, decoder_width]`: a two-layer MLP (tanh)."""

    def __init__(self, embedding_dim: int, decoder_width: int, prefix_length: int):
        super().__init__()
        self.prefix_length = prefix_length
        self.decoder_width = decoder_width
        hidden = max(embedding_dim, prefix_length * decoder_width // 2)
        self.layers = nn.Sequential(
            nn.Linear(embedding_dim, hidden), nn.Tanh(), nn.Linear(hidden, prefix_length * decoder_width)
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).view(-1, self.prefix_length, self.decoder_width)


class E2Captioner(nn.Module):
    """The decoder, its tokenizer, the prefix mapping and (DeCap) the text memory.

    Args:
        config: the recipe and sizes.
        decoder: a transformers causal LM (`AutoModelForCausalLM`), e.g. GPT-2.
        tokenizer: the decoder's tokenizer; its end token ends a caption.
        memory: DeCap's `[texts, embedding_dim]` L2-normalised training text embeddings.
    """

    def __init__(self, config: CaptionerConfig, decoder: nn.Module, tokenizer: Any,
                 memory: torch.Tensor | None = None):  # fmt: skip
        super().__init__()
        if config.recipe == "decap" and (memory is None or len(memory) == 0):
            raise CaptionerError("a DeCap captioner needs a memory of training text embeddings")
        self.config = config
        self.decoder = decoder
        self.tokenizer = tokenizer
        width = decoder.get_input_embeddings().embedding_dim
        self.mapping = PrefixMapping(config.embedding_dim, width, config.prefix_length)
        self.register_buffer("memory", memory if memory is not None else torch.zeros(0, config.embedding_dim))

    @property
    def end_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.end_token_id if pad is None else pad

    # ------------------------------------------------------------------ training
    def caption_token_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> `[batch, tokens]` ids ending with the end token, and their mask (right padding)."""
        limit = self.config.max_caption_tokens - 1
        rows = [self.tokenizer(text, add_special_tokens=False)["input_ids"][:limit] + [self.end_token_id]
                for text in texts]  # fmt: skip
        length = max(len(row) for row in rows)
        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for position, row in enumerate(rows):
            ids[position, : len(row)] = torch.tensor(row)
            mask[position, : len(row)] = 1
        return ids, mask

    def training_embeddings(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """CapDec's noise on the text embeddings (none for DeCap)."""
        if self.config.recipe != "capdec" or self.config.noise_variance == 0:
            return text_embeds
        return text_embeds + torch.randn_like(text_embeds) * self.config.noise_variance**0.5

    def loss(self, text_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the caption tokens after the prefix of `text_embeds` `[batch, dim]`."""
        prefix = self.mapping(self.training_embeddings(text_embeds))  # [batch, prefix, width]
        tokens = self.decoder.get_input_embeddings()(input_ids)  # [batch, tokens, width]
        inputs_embeds = torch.cat([prefix, tokens], dim=1)
        prefix_mask = torch.ones(prefix.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        labels = torch.cat([torch.full(prefix.shape[:2], -100, device=input_ids.device),
                            input_ids.masked_fill(attention_mask == 0, -100)], dim=1)  # fmt: skip
        mask = torch.cat([prefix_mask, attention_mask], dim=1)
        return self.decoder(inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels).loss

    # ------------------------------------------------------------------ inference
    def conditioning(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """What the decoder reads for `[batch, dim]` image embeddings: them (CapDec), or their
        similarity-weighted combination of the text memory (DeCap), L2-normalised."""
        image_embeds = F.normalize(image_embeds.float(), dim=-1)
        if self.config.recipe == "capdec":
            return image_embeds
        weights = (image_embeds @ self.memory.T / self.config.memory_temperature).softmax(dim=-1)
        return F.normalize(weights @ self.memory, dim=-1)

    @torch.no_grad()
    def generate(self, image_embeds: torch.Tensor, num_beams: int = 1, max_new_tokens: int | None = None) -> list[str]:
        """Captions of `[batch, dim]` image embeddings: greedy (`num_beams=1`) or beam search, with
        transformers' `generate`."""
        if image_embeds.ndim != 2 or image_embeds.shape[1] != self.config.embedding_dim:
            raise CaptionerError(
                f"image embeddings must be [batch, {self.config.embedding_dim}], got {list(image_embeds.shape)}"
            )
        device = self.mapping.layers[0].weight.device
        prefix = self.mapping(self.conditioning(image_embeds.to(device)))
        prefix = prefix.to(self.decoder.get_input_embeddings().weight.dtype)
        generated = self.decoder.generate(
            inputs_embeds=prefix,
            attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=device),
            max_new_tokens=max_new_tokens or self.config.max_caption_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=self.end_token_id,
            pad_token_id=self.pad_token_id,
        )
        return [text.strip() for text in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]

    # ------------------------------------------------------------------ backbone check
    def check_backbone(self, embedding_dim: int, fingerprint: str, name: str = "the model") -> None:
        """Refuses embeddings of another model: another size, or another fingerprint."""
        if embedding_dim != self.config.embedding_dim:
            raise CaptionerError(
                f"{name} gives {embedding_dim}-dimensional embeddings; this captioner was trained on "
                f"{self.config.embedding_dim}-dimensional ones of {self.config.backbone_name}"
            )
        if fingerprint != self.config.backbone_fingerprint:
            raise CaptionerError(
                f"{name} (fingerprint {fingerprint}) is not the model this captioner was trained on "
                f"({self.config.backbone_name}, fingerprint {self.config.backbone_fingerprint}): its embeddings "
                "live in another space; train a captioner for it with e2-hf train-captioner"
            )

    # ------------------------------------------------------------------ folders
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.decoder.save_pretrained(folder / DECODER_FOLDER)
        self.tokenizer.save_pretrained(folder / DECODER_FOLDER)
        save_file(
            {name: tensor.contiguous() for name, tensor in self.mapping.state_dict().items()}, folder / MAPPING_FILE
        )
        if self.config.recipe == "decap":
            save_file({"memory": self.memory.contiguous()}, folder / MEMORY_FILE)
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> E2Captioner:
        """A folder written by `save_pretrained`. Only JSON, tokenizer files and safetensors are read,
        each checked: no code runs, and a damaged or crafted file is a `CaptionerError` naming it."""
        folder = Path(folder)
        config = read_config(folder)
        decoder, tokenizer = load_decoder(str(folder / DECODER_FOLDER), safetensors_only=True)
        memory = read_memory(folder / MEMORY_FILE, config) if config.recipe == "decap" else None
        captioner = cls(config, decoder, tokenizer, memory)
        load_weights(captioner.mapping, folder / MAPPING_FILE)
        _check_finite(decoder.parameters(), folder / DECODER_FOLDER)
        return captioner.to(device).eval()


def _refuse_own_code(source: str) -> None:
    """A local decoder folder whose config or tokenizer config asks to run its own code is refused
    before transformers sees it (transformers would prompt for it at a terminal)."""
    for name in ("config.json", "tokenizer_config.json"):
        path = Path(source) / name
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CaptionerError(f"{path} is not valid JSON ({error})") from None
        if isinstance(record, dict) and "auto_map" in record:
            raise CaptionerError(
                f"{path} asks to run the folder's own code (auto_map); a captioner's decoder must be a model class "
                "transformers ships (e.g. GPT-2), and no code from a model folder is run"
            )


def load_decoder(source: str, safetensors_only: bool = False) -> tuple[nn.Module, Any]:
    """`(causal LM, tokenizer)` from a folder or Hub id, with `trust_remote_code=False`: a model
    that needs its own code is refused, never run. `safetensors_only` refuses pickled weights
    (a captioner folder holds safetensors; a Hub decoder may fall back to `torch.load(weights_only)`).
    The tokenizer's end and padding tokens, and its whole vocabulary, must fit the decoder's embeddings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _refuse_own_code(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001 (a damaged tokenizer file fails in many libraries' ways)
        raise CaptionerError(f"the tokenizer in {source} cannot be read ({_reason(error)})") from None
    try:
        decoder = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=False,
                                                       use_safetensors=True if safetensors_only else None)  # fmt: skip
    except Exception as error:  # noqa: BLE001 (as above: config, weights and transformers' own checks)
        raise CaptionerError(f"the decoder in {source} cannot be loaded ({_reason(error)})") from None
    if tokenizer.eos_token_id is None:
        raise CaptionerError(f"the tokenizer in {source} has no end token (eos_token) to end a caption with")
    vocabulary = decoder.get_input_embeddings().num_embeddings
    ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
           "largest token id": max(tokenizer.get_vocab().values(), default=0)}  # fmt: skip
    for name, value in ids.items():
        if value is not None and not 0 <= value < vocabulary:
            raise CaptionerError(
                f"the tokenizer in {source}: {name} is {value}, outside the decoder's {vocabulary} embeddings"
            )
    return decoder, tokenizer


def read_memory(path: Path, config: CaptionerConfig) -> torch.Tensor:
    """DeCap's memory: one float tensor `memory [texts, embedding_dim]` of finite values."""
    tensors = _read_safetensors(path)
    if set(tensors) != {"memory"}:
        raise CaptionerError(f"{path} holds {sorted(tensors)}; a captioner memory holds one tensor, 'memory'")
    memory = tensors["memory"]
    shape_ok = memory.ndim == 2 and len(memory) > 0 and memory.shape[1] == config.embedding_dim
    if not memory.is_floating_point() or not shape_ok:
        raise CaptionerError(
            f"{path}: memory is {memory.dtype} {list(memory.shape)}, the captioner needs float [texts, "
            f"{config.embedding_dim}]"
        )
    _check_finite([memory], path)
    return memory.float()


def load_weights(module: nn.Module, path: Path) -> None:
    """`module`'s weights from a safetensors file: the same names, shapes and float dtypes, finite."""
    tensors = _read_safetensors(path)
    expected = module.state_dict()
    for name, tensor in tensors.items():
        if name not in expected or tensor.shape != expected[name].shape or not tensor.is_floating_point():
            needs = f"{list(expected[name].shape)}" if name in expected else "nothing of that name"
            raise CaptionerError(f"{path}: {name} is {tensor.dtype} {list(tensor.shape)}, the captioner needs {needs}")
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CaptionerError(f"{path} lacks {missing}; the captioner folder is incomplete")
    _check_finite(tensors.values(), path)
    module.load_state_dict(tensors)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise CaptionerError(f"{path} is not a readable safetensors file ({_reason(error)}); train the captioner "
                             "again") from None  # fmt: skip


def _check_finite(tensors, where: Path) -> None:
    if not all(torch.isfinite(tensor).all() for tensor in tensors):
        raise CaptionerError(f"{where} holds NaN or infinite weights: it would write empty captions; train it again")


def _reason(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def read_config(folder: Path) -> CaptionerConfig:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CaptionerError(
            f"{folder} is not a captioner folder: {CONFIG_NAME} is missing (see e2-hf train-captioner)"
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        config = CaptionerConfig(**values)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as error:
        raise CaptionerError(f"{path} is not a valid captioner config: {error}") from None
    except CaptionerError as error:
        raise CaptionerError(f"{path}: {error}") from None
    if config.format_version != FORMAT_VERSION:
        raise CaptionerError(f"{path}: format_version {config.format_version}, this version reads {FORMAT_VERSION}")
    for name in (MAPPING_FILE, *([MEMORY_FILE] if config.recipe == "decap" else [])):
        if not (folder / name).is_file():
            raise CaptionerError(f"{folder / name} is missing; the captioner folder is incomplete")
    return config
