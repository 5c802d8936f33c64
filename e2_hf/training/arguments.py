"""The settings of a training run (`TrainingArguments`): light to import, so that `e2-hf train --help`
builds its flags without torch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

BASELINES = ("e2", "clip-ft")


def default_text_fields() -> list[str]:
    """The processor's product text parts, in order (imported when a run is set up, not for `--help`)."""
    from ..modeling.processing_e2clip import DEFAULT_PRODUCT_TEXT_FIELDS

    return list(DEFAULT_PRODUCT_TEXT_FIELDS)


@dataclass
class TrainingArguments:
    """Every setting of a run; `e2-hf train --help` documents each flag."""

    model: str
    train_data: str
    output_dir: str
    eval_data: str | None = None
    baseline: str = "e2"
    entities: list[str] | None = None
    tokens_per_entity: int = 2
    fusion_layers: list[int] | None = None
    region_loss: str | None = None
    region_loss_weight: float | None = None
    selection_attention: str | None = None
    gumbel_tau: float | None = None
    warmup_epochs: int = 5
    epochs: int = 20
    warmup_lr: float = 5e-4
    lr: float = 5e-5
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    warmup_steps: int = 100
    batch_size: int = 64
    eval_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    seed: int = 0
    num_workers: int = 0
    save_steps: int = 500
    save_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None
    report_to: str = "none"
    strict: bool = False
    keep_html: bool = False
    tag_separators: list[str] | None = None  # "ENTITY=CHARACTERS": multi-value tags, e.g. "season=|"
    max_skipped_share: float = 0.1
    text_fields: list[str] = field(default_factory=default_text_fields)
    image_fit: str | None = None  # "crop" or "pad"; None keeps the starting model's processor setting
    log_steps: int = 10
    stop_after_steps: int | None = None  # simulate an interruption (tests); the schedule is unchanged

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_skipped_share <= 1:
            raise ValueError(f"max_skipped_share must be between 0 and 1, got {self.max_skipped_share}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.image_fit is not None:
            from ..modeling.image_processing_e2clip import checked_image_fit

            checked_image_fit(self.image_fit)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainingArguments:
        """Settings from a JSON or YAML file; `overrides` (e.g. command-line flags) win."""
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith((".yaml", ".yml")):
            import yaml  # a requirement of huggingface_hub

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}")
        return cls(**{**values, **overrides})
