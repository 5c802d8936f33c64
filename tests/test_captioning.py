"""Zero-shot captioning (CapDec, DeCap) on a tiny E2 model, and the caption metrics."""

import json
import shutil

import pytest
import torch

from e2_hf import E2CLIPModel, E2CLIPProcessor, from_clip
from e2_hf.captioning import (
    CaptionerError,
    CaptionerTrainingArguments,
    E2Captioner,
    attribute_accuracy,
    caption_metrics,
    load_captioner,
    train_captioner,
)
from e2_hf.captioning.training import catalog_texts, corpus_tokenizer, embed_corpus, small_decoder
from e2_hf.search.index import model_fingerprint

from .conftest import run_e2_hf

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's tokenizer and METEOR need java")


@pytest.fixture(scope="module")
def backbone(e2_model_dir):
    return E2CLIPModel.from_pretrained(e2_model_dir).eval(), E2CLIPProcessor.from_pretrained(e2_model_dir)


def test_the_folder_holds_decoder_mapping_and_memory(decap_folder, backbone):
    model, _ = backbone
    captioner = load_captioner(decap_folder, model)
    assert sorted(path.name for path in decap_folder.iterdir()) == [
        "captioner_config.json", "decoder", "mapping.safetensors", "memory.safetensors"]  # fmt: skip
    assert captioner.memory.shape[1] == model.config.projection_dim


def test_captions_of_training_text_embeddings_are_the_texts(decap_folder, backbone, catalog):
    """Text in, text out: through DeCap's memory projection (low temperature), greedy and beam."""
    model, processor = backbone
    captioner = load_captioner(decap_folder, model)
    texts = catalog_texts(processor, f"jsonl:{catalog / 'catalog.jsonl'}:train")
    embeddings = embed_corpus(model, processor, texts, "cpu")
    captioner.config.memory_temperature = 1e-4  # each text's own memory row
    greedy = captioner.generate(embeddings)
    beams = captioner.generate(embeddings, num_beams=3)
    # an untrained decoder writes none of them; this one most (29 of 40 when measured)
    assert sum(caption == text for caption, text in zip(greedy, texts)) >= 20, list(zip(greedy, texts))
    assert sum(caption == text for caption, text in zip(beams, texts)) >= 20


def test_captions_of_images_through_the_command_and_metrics(decap_folder, e2_model_dir, catalog, tmp_path):
    output = tmp_path / "captions.jsonl"
    completed = run_e2_hf("caption", "--model", str(e2_model_dir), "--captioner", str(decap_folder),
                        "--image", str(catalog / "images" / "000000_0.png"), str(catalog / "images" / "000001_0.png"),
                        "--num-beams", "2", "--output", str(output))  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["image"].endswith("_0.png") for record in records] == [True, True]
    assert all(record["caption"] for record in records)


@needs_java
def test_catalog_captions_are_scored(decap_folder, e2_model_dir, catalog, tmp_path):
    metrics = tmp_path / "metrics.json"
    completed = run_e2_hf("caption", "--model", str(e2_model_dir), "--captioner", str(decap_folder), "--data",
                        f"jsonl:{catalog / 'catalog.jsonl'}:validation", "--metrics", str(metrics))  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    scores = json.loads(metrics.read_text())
    assert scores["captions"] == 10
    assert set(scores["attribute_accuracy"]) == {"brand", "season", "subcategory", "composition"}
    for name in ("bleu4", "meteor", "rouge_l"):
        assert 0 < scores[name] <= 1, name
    assert scores["cider"] > 0


@needs_java
def test_caption_metrics_rank_a_right_caption_above_a_wrong_one():
    references = [["Navy dress in crisp striped cotton by Aurel"], ["Black shirt in smooth silk by Kato"]]
    right = caption_metrics([text for (text,) in references], references)
    wrong = caption_metrics(["Navy shirt in wool", "Black dress in denim"], references)
    assert right["bleu4"] == pytest.approx(1.0) and right["rouge_l"] == pytest.approx(1.0)
    for name in ("bleu4", "meteor", "rouge_l", "cider"):
        assert right[name] > wrong[name], name


def test_attribute_accuracy_names_whole_values_of_the_right_product():
    values = [{"brand": ("Aurel",), "composition": ("100% cotton",)},
              {"brand": ("Aurel Studio",), "composition": ("100% silk",)},
              {"brand": ("Kato",), "composition": ()},
              {"brand": ("Aurel",), "composition": ("100% cotton", "elastane")}]  # fmt: skip
    captions = ["100 % Cotton dress by AUREL.", "Silk shirt by Aurel Studio", "Kato", "an Aurel Studio dress in silk"]
    accuracy = attribute_accuracy(captions, values, ["brand", "composition", "season"])
    # brand: 1 right; 2 right; 3 right; 4 names "Aurel Studio", another product's brand: wrong
    assert accuracy["brand"] == pytest.approx(3 / 4)
    # composition (product 3 has none): 1 right; 2 "silk" is not "100% silk"; 4 names neither value
    assert accuracy["composition"] == pytest.approx(1 / 3)
    assert accuracy["season"] is None


def test_capdec_adds_noise_of_its_variance_and_decap_projects_onto_its_memory(tokenizer_dir):
    from e2_hf.captioning.captioner import CaptionerConfig

    tokenizer = corpus_tokenizer(["a navy dress", "a black shirt"] * 4, 300)
    decoder = small_decoder(tokenizer, width=16, layers=1, heads=2, positions=32)
    common = dict(embedding_dim=8, prefix_length=2, backbone_name="m", backbone_fingerprint="f")
    capdec = E2Captioner(CaptionerConfig(recipe="capdec", noise_variance=0.04, **common), decoder, tokenizer)
    embeds = torch.zeros(20000, 8)
    assert capdec.training_embeddings(embeds).var().item() == pytest.approx(0.04, rel=0.05)
    assert torch.equal(capdec.conditioning(torch.eye(8)[:2]), torch.eye(8)[:2])

    memory = torch.eye(8)[:3]
    decap = E2Captioner(CaptionerConfig(recipe="decap", memory_temperature=1e-3, **common), decoder, tokenizer, memory)
    assert torch.equal(decap.training_embeddings(embeds), embeds)
    query = torch.tensor([[0.9, 0.1, 0, 0, 0, 0, 0, 1.0]])  # closest to memory row 0
    torch.testing.assert_close(decap.conditioning(query), memory[:1])
    with pytest.raises(CaptionerError, match="needs a memory"):
        E2Captioner(CaptionerConfig(recipe="decap", **common), decoder, tokenizer)


def test_another_backbone_is_refused(decap_folder, backbone, small_clip):
    model, _ = backbone
    other = from_clip(str(small_clip), fusion_layers=[1, 2])  # new selection tokens: another space
    assert model_fingerprint(other) != model_fingerprint(model)
    with pytest.raises(CaptionerError, match="is not the model this captioner was trained on"):
        load_captioner(decap_folder, other)
    captioner = E2Captioner.from_pretrained(decap_folder)
    with pytest.raises(CaptionerError, match="gives 32-dimensional embeddings"):
        captioner.check_backbone(32, model_fingerprint(model))
    with pytest.raises(CaptionerError, match=r"must be \[batch, 16\]"):
        captioner.generate(torch.zeros(1, 32))


def test_capdec_from_a_pretrained_causal_lm_folder(e2_model_dir, catalog, tmp_path):
    """`--decoder` takes any causal LM with its tokenizer (a Hub id or folder; here a folder)."""
    tokenizer = corpus_tokenizer(["navy dress by Aurel in cotton"] * 8, 300)
    start = tmp_path / "start"
    small_decoder(tokenizer, width=24, layers=1, heads=2, positions=96).save_pretrained(start)
    tokenizer.save_pretrained(start)
    args = CaptionerTrainingArguments(model=str(e2_model_dir), train_data=f"jsonl:{catalog / 'catalog.jsonl'}:train",
                                      output_dir=str(tmp_path / "capdec"), decoder=str(start), epochs=1,
                                      batch_size=16, max_caption_tokens=48)  # fmt: skip
    summary = train_captioner(args, log=lambda line: None)
    assert summary["texts"] == 40 and len(summary["loss_per_epoch"]) == 1
    captioner = E2Captioner.from_pretrained(tmp_path / "capdec")
    assert captioner.config.recipe == "capdec" and captioner.mapping.decoder_width == 24
    assert not (tmp_path / "capdec" / "memory.safetensors").exists()


def test_bad_training_input_is_refused(e2_model_dir, catalog, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no products"):
        train_captioner(CaptionerTrainingArguments(model=str(e2_model_dir), train_data=f"jsonl:{empty}",
                                                   output_dir=str(tmp_path / "out")))  # fmt: skip
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(CaptionerError, match="exists and is not a captioner folder"):
        train_captioner(CaptionerTrainingArguments(model=str(e2_model_dir), train_data="jsonl:unused.jsonl",
                                                   output_dir=str(tmp_path / "notes")))  # fmt: skip
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    with pytest.raises(CaptionerError, match="recipe must be one of"):
        CaptionerTrainingArguments(model="m", train_data="d", output_dir="o", recipe="clipcap")
    with pytest.raises(CaptionerError, match="captioner_config.json is missing"):
        E2Captioner.from_pretrained(tmp_path)


def test_scoring_without_java_is_refused_before_captioning(monkeypatch):
    from e2_hf.captioning import metrics

    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(CaptionerError, match="need a Java runtime"):
        metrics.check_metrics_available()
