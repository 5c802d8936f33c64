"""transformers.Trainer fine-tunes E2 with the documented recipe."""

import pytest
from transformers import Trainer
from transformers import TrainingArguments as HFTrainingArguments

from e2_hf import E2CLIPProcessor, from_clip
from e2_hf.data import ProductDataset, open_catalog
from e2_hf.hf_trainer import retrieval_compute_metrics, trainer_collator
from e2_hf.training import enable_cross_rank_loss


def test_trainer_loss_goes_down_and_recall_is_reported(catalog, small_clip, tmp_path):
    model = from_clip(str(small_clip), fusion_layers=[1, 2])
    enable_cross_rank_loss(model)  # the documented recipe; a no-op on one process
    processor = E2CLIPProcessor.from_pretrained(str(small_clip), entities=model.config.entities)
    train_catalog = open_catalog(f"fashiongen:{catalog / 'train.h5'}")
    entities = model.config.entities
    args = HFTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=16, max_steps=30,
        learning_rate=2e-3, warmup_steps=0, logging_steps=5, save_strategy="no", report_to=[],
        remove_unused_columns=False, use_cpu=True, seed=0, dataloader_num_workers=0, dataloader_drop_last=True,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ProductDataset(train_catalog, entities, training=True),
        eval_dataset=ProductDataset(train_catalog, entities, training=False),
        data_collator=trainer_collator(processor),
        compute_metrics=retrieval_compute_metrics,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"]
    assert {"eval_sumr", "eval_image_to_text_R_at_1", "eval_text_to_image_R_at_10"} <= set(after)
    assert after["eval_sumr"] > before["eval_sumr"]
    assert 0 <= after["eval_image_to_text_R_at_1"] <= 100
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0] == pytest.approx(losses[0])
