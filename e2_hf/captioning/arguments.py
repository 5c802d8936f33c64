"""The settings of `e2-hf train-captioner` (`CaptionerTrainingArguments`) and the recipes: light to
import, so that the captioner commands build their flags without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CaptionerError

RECIPES = ("capdec", "decap")


@dataclass
class CaptionerTrainingArguments:
    """Every setting of `e2-hf train-captioner`; its `--help` documents each flag."""

    model: str
    train_data: str
    output_dir: str
    recipe: str = "capdec"
    decoder: str | None = None
    decoder_layers: int = 4
    decoder_width: int = 256
    decoder_heads: int = 4
    decoder_vocab_size: int = 2000
    prefix_length: int = 4
    noise_variance: float = 0.016
    memory_temperature: float = 0.01
    max_caption_tokens: int = 64
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    seed: int = 0
    device: str | None = None
    keep_html: bool = False
    tag_separators: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise CaptionerError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        for name in ("epochs", "batch_size", "decoder_layers", "decoder_width", "decoder_heads", "prefix_length"):
            if getattr(self, name) < 1:
                raise CaptionerError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.decoder_width % self.decoder_heads:
            raise CaptionerError(f"decoder_width ({self.decoder_width}) must be a multiple of decoder_heads "
                                 f"({self.decoder_heads})")  # fmt: skip
