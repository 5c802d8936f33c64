"""Fine-tune E2 (or the CLIP-FT baseline) with Accelerate: one GPU or many, or the CPU.

    e2-hf train --model openai/clip-vit-base-patch32 --train-data fashiongen:train.h5 \\
        --eval-data fashiongen:validation.h5 --output-dir runs/e2
    accelerate launch --num_processes 8 -m e2_hf.cli train ...

The paper's recipe by default (spec, section 2): a warm-up stage that trains only E2's new
parameters (5 epochs, lr 5e-4), then everything (20 epochs, lr 5e-5); AdamW (0.9, 0.999), weight
decay 1e-4 except on norms, biases, selection tokens and the logit scale; cosine schedule with
100 warm-up steps per stage; batch 64; seed 0. Contrastive negatives span all processes.

Layout of `--output-dir`: `checkpoints/checkpoint-<step>/` (`accelerator.save_state`, every
`--save-steps` and at the end), `best-model/` (best SumR on the eval data), `model/` (the
final model), each Hub-ready and written through a temporary folder renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from ..cli_options import print_notice
from ..conversion.convert_clip_to_e2 import from_clip, from_clip_state_dict
from ..data import E2Collator, ProductDataset, dataset_truncation, open_catalog, untagged_entities_notice
from ..errors import TrainingError
from ..evaluation import retrieval_metrics
from ..evaluation.embedding import check_model_folder
from ..extras import require
from ..local_paths import portable_name, portable_spec
from ..modeling import E2CLIPConfig, E2CLIPModel, E2CLIPProcessor
from .arguments import TrainingArguments
from .loss import enable_cross_rank_loss

# What E2Collator adds to a batch for the trainer, not for the model.
COLLATOR_BOOKKEEPING = ("skipped_images", "indices")


# ------------------------------------------------------------------------------------ pieces
class EpochSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch) only: the same order after a resume."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class TrainingProgress:
    """Where the run is; saved with every checkpoint."""

    def __init__(self):
        self.global_step = 0  # optimizer steps
        self.epoch = 0
        self.batches_in_epoch = 0  # micro-batches done in the current epoch
        self.best_sumr = -1.0
        self.skipped_images = 0
        self.loaded_images = 0
        self.first_skipped: str | None = None  # the first unreadable image's error

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if total <= 0:
        return 0.0
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class TwoStageSchedule:
    """Learning rate per parameter group: new parameters use `warmup_lr` in stage 1 and `lr` in
    stage 2; the backbone trains only in stage 2. Each stage is a cosine with linear warm-up
    (`warmup_steps`, capped at a fifth of the stage)."""

    def __init__(self, args: TrainingArguments, stage1_steps: int, stage2_steps: int):
        self.args, self.stage1_steps, self.stage2_steps = args, stage1_steps, stage2_steps

    def lr(self, step: int, is_new: bool) -> float:
        args = self.args
        if step < self.stage1_steps:
            warmup = min(args.warmup_steps, max(1, self.stage1_steps // 5))
            return args.warmup_lr * cosine_with_warmup(step, self.stage1_steps, warmup) if is_new else 0.0
        warmup = min(args.warmup_steps, max(1, self.stage2_steps // 5))
        return args.lr * cosine_with_warmup(step - self.stage1_steps, self.stage2_steps, warmup)


def parameter_groups(model: E2CLIPModel, weight_decay: float) -> list[dict[str, Any]]:
    """Four groups: E2's new parameters or the backbone, with or without weight decay."""
    new_names = set(model.e2_parameter_names())
    no_decay = model.no_weight_decay()
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        groups.setdefault((name in new_names, name not in no_decay), []).append(parameter)
    return [
        {"params": params, "is_new": is_new, "weight_decay": weight_decay if decays else 0.0, "lr": 1.0}
        for (is_new, decays), params in sorted(groups.items())
    ]


def build_model(args: TrainingArguments) -> E2CLIPModel:
    """An E2 checkpoint as it is, or a CLIP checkpoint turned into E2 (or plain CLIP for clip-ft).

    The checkpoint's config is read as JSON and only E2 and CLIP checkpoints are accepted, so no
    code from a model repo ever runs: E2's code is this package's own.
    """
    from transformers import PretrainedConfig

    check_model_folder(args.model)
    config_dict, _ = PretrainedConfig.get_config_dict(args.model)
    model_type = config_dict.get("model_type")
    if model_type not in (E2CLIPConfig.model_type, "clip"):
        raise ValueError(
            f"{args.model} is a {model_type!r} checkpoint; training starts from an E2 checkpoint or a transformers "
            "CLIP checkpoint (model_type 'clip'). Code from a model repo is never run."
        )
    overrides: dict[str, Any] = {"entities": [] if args.baseline == "clip-ft" else args.entities}
    if args.baseline == "e2":
        overrides.update(tokens_per_entity=args.tokens_per_entity, fusion_layers=args.fusion_layers,
                         region_loss=args.region_loss, region_loss_weight=args.region_loss_weight,
                         selection_attention=args.selection_attention, gumbel_tau=args.gumbel_tau)  # fmt: skip
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if model_type == E2CLIPConfig.model_type:
        model = E2CLIPModel.from_pretrained(args.model)
        if args.baseline == "clip-ft" and model.config.entities:
            raise ValueError(f"--baseline clip-ft needs a CLIP checkpoint; {args.model} is E2 with entities")
        if args.baseline == "e2" and not model.config.entities:  # a CLIP-FT checkpoint: add E2's parts
            config = E2CLIPConfig(**{**model.config.to_dict(), "entities": E2CLIPConfig().entities, **overrides})
            return from_clip_state_dict(config, model.state_dict(), source=args.model)
        return model
    return from_clip(args.model, **overrides)


def check_entities(model: E2CLIPModel, catalog, data_spec: str) -> None:
    available = sorted({entity for product in catalog.products for entity in product.tags})
    missing = [entity for entity in model.config.entities if entity not in available]
    if missing:
        raise ValueError(
            f"the model's entities {model.config.entities} are not all in {data_spec}: missing {missing}; "
            f"the data has tag fields {available}"
        )


def save_hub_folder(model: E2CLIPModel, processor: E2CLIPProcessor, target: Path, args: TrainingArguments,
                    untagged_entities: Sequence[str] = ()) -> None:  # fmt: skip
    """`save_pretrained` into a temporary folder, then rename it into place: a crash never leaves
    a half-written model at `target`."""
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    processor.save_pretrained(temporary)
    # untagged_entities: entities the training data had no tag for (their regions never learned from tags)
    record = {**portable_args(args), "untagged_entities": list(untagged_entities)}
    (temporary / "training_args.json").write_text(json.dumps(record, indent=2) + "\n")
    previous = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, previous)
    os.replace(temporary, target)
    shutil.rmtree(previous, ignore_errors=True)


def portable_args(args: TrainingArguments) -> dict[str, Any]:
    """The settings without this machine's paths (they would leak into a published repo): local
    paths are reduced to their last component."""
    values = asdict(args)
    for key in ("output_dir", "resume_from_checkpoint", "stop_after_steps"):
        values.pop(key)
    values["model"] = portable_name(args.model)
    for key in ("train_data", "eval_data"):
        if values[key]:
            values[key] = portable_spec(values[key])
    return values


COMPLETE_MARKER = "checkpoint_complete.json"


def all_checkpoints(output_dir: Path) -> list[Path]:
    """Complete `checkpoints/checkpoint-<step>` folders, oldest first. A checkpoint is written into a
    temporary folder and renamed when complete, with `COMPLETE_MARKER` written last; a folder without
    the marker (a save that was killed) is never offered."""
    folders = (output_dir / "checkpoints").glob("checkpoint-*")
    complete = [path for path in folders if path.name.split("-")[1].isdigit() and (path / COMPLETE_MARKER).is_file()]
    return sorted(complete, key=checkpoint_step)


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[1])


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = all_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def last_good_checkpoint(output_dir: Path, global_step: int) -> Path | None:
    """The newest checkpoint whose weights gave a finite loss. A step taken after `global_step`
    updates runs with the weights of `checkpoint-<global_step>`: when that step's loss is not finite,
    that checkpoint holds the weights that produce it, and only older ones are good."""
    good = [path for path in all_checkpoints(output_dir) if checkpoint_step(path) < global_step]
    return good[-1] if good else None


@torch.no_grad()
def embed_eval_set(model, dataset: ProductDataset, collator: E2Collator, accelerator, batch_size: int):
    """Global image and text embeddings of every product (first view), gathered over processes.

    Unlike `E2CLIPEmbedder`, this runs the model as Accelerate wrapped it (DDP, or FSDP whose
    shards only the wrapper can run) under the run's mixed precision, each process on its share of
    the products, and gathers the rows."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator, generator=torch.Generator())
    loader = accelerator.prepare(loader)
    model.eval()
    images, texts, indices = [], [], []
    for batch in tqdm(loader, desc="embedding eval set", disable=not accelerator.is_local_main_process, leave=False):
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        pixel_values=batch["pixel_values"])  # fmt: skip
        gathered = accelerator.gather_for_metrics((outputs.image_embeds, outputs.text_embeds, batch["indices"]))
        images.append(gathered[0].float().cpu())
        texts.append(gathered[1].float().cpu())
        indices.append(gathered[2].cpu())
    model.train()
    return torch.cat(images), torch.cat(texts), torch.cat(indices)


# ------------------------------------------------------------------------------------ the run
@dataclass
class Run:
    """Everything one training run holds, built by `prepare_run`."""

    args: TrainingArguments
    accelerator: Any
    model: Any  # wrapped by Accelerate (DDP, ...)
    unwrapped: E2CLIPModel
    processor: E2CLIPProcessor
    optimizer: Any
    scheduler: Any
    progress: TrainingProgress
    train_set: ProductDataset
    sampler: EpochSampler
    train_loader: Any
    eval_set: ProductDataset | None
    stage1_epochs: int
    total_epochs: int
    steps_per_epoch: int
    last_checkpoint: Path | None = None  # the newest this run saved
    untagged_entities: list[str] = field(default_factory=list)  # no tag in the training data


def prepare_run(args: TrainingArguments) -> Run:
    """Accelerator -> seed -> data -> model -> optimizer -> schedule -> prepare -> resume."""
    require("accelerate", "e2-hf train")
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed

    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,
        step_scheduler_with_optimizer=False,  # the schedule counts optimizer steps itself
        # stage 1 freezes the backbone, so some parameters get no gradient
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(args.seed)
    reading = {"keep_html": args.keep_html, "tag_separators": args.tag_separators}
    train_catalog = open_catalog(args.train_data, **reading)
    eval_catalog = open_catalog(args.eval_data, **reading) if args.eval_data else None

    model = build_model(args)
    processor = E2CLIPProcessor.from_pretrained(args.model, entities=model.config.entities)
    if args.image_fit is not None:
        processor.image_processor.image_fit = args.image_fit
    for catalog, spec in ((train_catalog, args.train_data), (eval_catalog, args.eval_data)):
        if catalog is not None:
            check_entities(model, catalog, spec)
    if args.gradient_checkpointing:  # transformers 5.x renamed the method; 4.x has only the old name
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    entities = model.config.entities
    train_set = ProductDataset(train_catalog, entities, training=True, seed=args.seed, text_fields=args.text_fields)
    untagged = train_catalog.untagged_entities(entities)
    if accelerator.is_main_process:  # what the user should know about the data, said once
        print_notice(dataset_truncation(train_set, processor).message(f"product texts of {args.train_data}"))
        print_notice(untagged_entities_notice(train_catalog, entities, args.train_data,
                                              "its region loss is masked for every product, so its selection tokens "
                                              "and regional embedding are not trained on tags", untagged))  # fmt: skip
    sampler = EpochSampler(len(train_set), args.seed)
    # The loader's own generator: creating an iterator must not draw from the global RNG, which
    # drives the Gumbel noise and is restored on resume.
    train_loader = DataLoader(
        train_set, batch_size=args.batch_size, sampler=sampler, collate_fn=E2Collator(processor, strict=args.strict),
        num_workers=args.num_workers, drop_last=True, generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    if len(train_loader) == 0:
        raise ValueError(f"{args.train_data} has {len(train_set)} products, fewer than one batch of {args.batch_size}")

    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay), lr=1.0, betas=(args.adam_beta1, args.adam_beta2)
    )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    unwrapped = accelerator.unwrap_model(model)
    enable_cross_rank_loss(unwrapped)  # negatives from the whole global batch
    # CLIP-FT (no new parameters) trains everything for the same number of epochs as E2's two stages
    stage1_epochs = args.warmup_epochs if unwrapped.e2_parameter_names() else 0
    total_epochs = args.warmup_epochs + args.epochs
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    stage1_steps = stage1_epochs * steps_per_epoch
    schedule = TwoStageSchedule(args, stage1_steps, total_epochs * steps_per_epoch - stage1_steps)
    inner_optimizer = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    lambdas = [lambda step, is_new=group["is_new"]: schedule.lr(step, is_new) for group in inner_optimizer.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(inner_optimizer, lambdas)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(scheduler, progress)

    eval_set = None
    if eval_catalog is not None:
        eval_set = ProductDataset(eval_catalog, entities, training=False, text_fields=args.text_fields)
    run = Run(args, accelerator, model, unwrapped, processor, optimizer, scheduler, progress,
              train_set, sampler, train_loader, eval_set,
              stage1_epochs, total_epochs, steps_per_epoch, untagged_entities=untagged)  # fmt: skip
    if args.resume_from_checkpoint:
        resume(run)
    return run


def resume(run: Run) -> None:
    args, output_dir = run.args, Path(run.args.output_dir)
    if args.resume_from_checkpoint == "latest":
        checkpoint = latest_checkpoint(output_dir)
    else:
        checkpoint = Path(args.resume_from_checkpoint)
    if checkpoint is None or not checkpoint.is_dir():
        raise ValueError(f"no complete checkpoint to resume from ({args.resume_from_checkpoint}) in {output_dir}")
    if not (checkpoint / COMPLETE_MARKER).is_file():
        raise ValueError(f"{checkpoint} is incomplete (its save was interrupted); resume from another one")
    run.accelerator.load_state(str(checkpoint))
    run.accelerator.print(f"resumed from {checkpoint} at step {run.progress.global_step} (epoch {run.progress.epoch})")


def train(args: TrainingArguments) -> dict[str, Any]:
    """Runs the whole training; returns a summary (steps, best SumR, final model path, ...)."""
    run = prepare_run(args)
    accelerator, progress, output_dir = run.accelerator, run.progress, Path(args.output_dir)
    if accelerator.is_main_process and args.report_to != "none":
        scalars = {key: value for key, value in portable_args(args).items() if not isinstance(value, list)}
        accelerator.init_trackers("e2", config=scalars)
    history: list[dict[str, Any]] = []
    bar = tqdm(total=run.total_epochs * run.steps_per_epoch, initial=progress.global_step, desc=args.baseline,
               disable=not accelerator.is_local_main_process)  # fmt: skip
    run.model.train()
    stopped_early = False
    for epoch in range(progress.epoch, run.total_epochs):
        progress.epoch = epoch
        stopped_early = train_epoch(run, epoch, bar)
        if stopped_early:
            break
        progress.batches_in_epoch, progress.epoch = 0, epoch + 1
        check_usable_data(progress, args)
        if run.eval_set is not None:
            history.append({"epoch": epoch, **evaluate_and_keep_best(run)})
    bar.close()
    run.last_checkpoint = save_checkpoint(accelerator, output_dir, progress, args.save_total_limit)
    summary = {"global_step": progress.global_step, "epochs": progress.epoch, "best_sumr": progress.best_sumr,
               "skipped_images": progress.skipped_images, "history": history,
               "checkpoint": str(run.last_checkpoint)}  # fmt: skip
    if not stopped_early:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_hub_folder(run.unwrapped, run.processor, output_dir / "model", args, run.untagged_entities)
        summary["model"] = str(output_dir / "model")
    if progress.skipped_images:
        accelerator.print(f"skipped {progress.skipped_images} unreadable images (use --strict to stop on the first)")
    accelerator.end_training()
    return summary


def check_usable_data(progress: TrainingProgress, args: TrainingArguments) -> None:
    """Too many unreadable images, or none readable, stops the run instead of training on what is left."""
    total = progress.loaded_images + progress.skipped_images
    if progress.global_step == 0 or total and progress.skipped_images > args.max_skipped_share * total:
        raise TrainingError(
            f"{progress.skipped_images} of {total} images of {args.train_data} were unreadable (allowed: "
            f"{args.max_skipped_share:.0%}, --max-skipped-share) and {progress.global_step} optimizer steps were "
            f"taken; training stopped, no model was written. First unreadable image: {progress.first_skipped}"
        )


def train_epoch(run: Run, epoch: int, bar) -> bool:
    """One epoch (or what is left of it after a resume); True when `stop_after_steps` stopped it."""
    args, accelerator, progress = run.args, run.accelerator, run.progress
    entering_stage2 = epoch == run.stage1_epochs and progress.batches_in_epoch == 0  # not when resuming mid-epoch
    set_stage(run.unwrapped, run.optimizer, stage=1 if epoch < run.stage1_epochs else 2, reset_backbone=entering_stage2)
    run.sampler.set_epoch(epoch)
    run.train_set.set_epoch(epoch)
    loader = run.train_loader
    if progress.batches_in_epoch:
        loader = accelerator.skip_first_batches(run.train_loader, progress.batches_in_epoch)
    # Accelerate's loaders pass their own iteration count to the sampler's set_epoch when they
    # start iterating; a fresh loader after a resume must count from this epoch.
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    for batch in loader:
        skipped = batch.pop("skipped_images", [])
        progress.skipped_images += len(skipped)
        progress.first_skipped = progress.first_skipped or (skipped[0] if skipped else None)
        progress.loaded_images += len(batch.get("indices", []))
        for key in COLLATOR_BOOKKEEPING:
            batch.pop(key, None)
        progress.batches_in_epoch += 1
        if "input_ids" not in batch:  # every image of the batch was unreadable
            continue
        losses = train_step(run, batch, epoch)
        if not accelerator.sync_gradients:
            continue
        run.scheduler.step()
        progress.global_step += 1
        bar.update(1)
        if progress.global_step % args.log_steps == 0:
            logs = {name: float(value.detach()) for name, value in losses.items() if value is not None}
            logs["lr"] = run.scheduler.get_last_lr()[-1]
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
            accelerator.log(logs, step=progress.global_step)
        if progress.global_step % args.save_steps == 0:
            run.last_checkpoint = save_checkpoint(accelerator, Path(args.output_dir), progress, args.save_total_limit)
        if args.stop_after_steps is not None and progress.global_step >= args.stop_after_steps:
            return True
    return False


def train_step(run: Run, batch: dict[str, Any], epoch: int) -> dict[str, torch.Tensor | None]:
    with run.accelerator.accumulate(run.model):
        outputs = run.model(**batch)  # the batch has return_loss=True: the model's own (gathered) loss
        losses = {"loss": outputs.loss, "global_loss": outputs.global_loss, "region_loss": outputs.region_loss}
        if not torch.isfinite(losses["loss"]):
            good = last_good_checkpoint(Path(run.args.output_dir), run.progress.global_step)
            kept = f"The last good checkpoint is {good}." if good else "No checkpoint with finite-loss weights is kept."
            raise TrainingError(
                f"non-finite loss ({float(losses['loss'].detach())}) at step {run.progress.global_step + 1}, "
                f"epoch {epoch}; training stopped. {kept}"
            )
        run.accelerator.backward(losses["loss"])
        run.optimizer.step()
        run.optimizer.zero_grad()
    return losses


def evaluate_and_keep_best(run: Run) -> dict[str, Any]:
    """Full-candidate retrieval on the eval data; a better SumR replaces `best-model/`."""
    accelerator = run.accelerator
    collator = E2Collator(run.processor, strict=run.args.strict)
    images, texts, _ = embed_eval_set(run.model, run.eval_set, collator, accelerator, run.args.eval_batch_size)
    metrics = retrieval_metrics(images, texts)
    accelerator.print(
        f"epoch eval: SumR {metrics['sumr']:.1f} | i2t R@1 {metrics['image_to_text']['R@1']:.1f} "
        f"| t2i R@1 {metrics['text_to_image']['R@1']:.1f}"
    )
    accelerator.log({"eval/sumr": metrics["sumr"]}, step=run.progress.global_step)
    if metrics["sumr"] > run.progress.best_sumr:
        run.progress.best_sumr = metrics["sumr"]
        if accelerator.is_main_process:
            save_hub_folder(run.unwrapped, run.processor, Path(run.args.output_dir) / "best-model", run.args,
                            run.untagged_entities)  # fmt: skip
    return {"full": metrics, "sumr": metrics["sumr"]}


def set_stage(model: E2CLIPModel, optimizer, stage: int, reset_backbone: bool) -> None:
    """Stage 1 trains only E2's new parameters; stage 2 everything. Entering stage 2 clears the
    backbone's optimizer state, so its first steps are Adam's first steps."""
    new_names = set(model.e2_parameter_names())
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(stage == 2 or name in new_names)
    if stage == 2 and reset_backbone:
        inner = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        for group in inner.param_groups:
            if not group["is_new"]:
                for parameter in group["params"]:
                    inner.state.pop(parameter, None)


def save_checkpoint(accelerator, output_dir: Path, progress: TrainingProgress, keep: int | None) -> Path:
    """`accelerator.save_state` into `checkpoints/checkpoint-<step>`, atomically: written into a
    temporary folder, marked complete, then renamed. Keeps the newest `keep`, and always the one
    before the newest (the newest is known to be good only once a later step's loss is finite)."""
    checkpoints = output_dir / "checkpoints"
    path = checkpoints / f"checkpoint-{progress.global_step}"
    temporary = checkpoints / f".checkpoint-{progress.global_step}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / COMPLETE_MARKER).write_text(json.dumps({"global_step": progress.global_step}) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        os.replace(temporary, path)
        if keep is not None:
            for old in all_checkpoints(output_dir)[: -max(keep, 2)]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path
