"""Shared tiny models, tokenizers and images for the tests (no network, no Hub)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from e2_hf import E2CLIPConfig, E2CLIPModel, E2CLIPProcessor, clip_image_processor, from_clip
from e2_hf.tokenization import learn_bpe_merges, read_merges, write_clip_tokenizer_files

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BPE_PATH = SHARED / "data" / "bpe_simple_vocab_16e6.txt.gz"
FIXTURE_DIR = SHARED / "fixtures" / "e2_reference_small"
TINY_NUM_MERGES = 2000  # a real prefix of CLIP's merge list: vocabulary of 2514 ids
TAG_ENTITIES = ["brand", "season", "subcategory", "composition"]


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not laid beside this checkout)")
    return path


class E2CLIPModelTester:
    """Tiny sizes in the spirit of transformers' CLIP tests (hidden 32, image 30, patch 2 there)."""

    def __init__(self, vocab_size: int = 99, entities=tuple(TAG_ENTITIES), **overrides):
        self.batch_size = 4
        self.seq_length = 7
        self.image_size = 32
        self.vocab_size = vocab_size
        self.config_kwargs = dict(
            text_config=dict(
                vocab_size=vocab_size,
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=16,
                pad_token_id=0,
                bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1,
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=4,
                num_attention_heads=4,
                image_size=self.image_size,
                patch_size=8,
            ),
            projection_dim=16,
            entities=list(entities),
            tokens_per_entity=2,
            fusion_layers=[1, 2],
        )
        self.config_kwargs.update(overrides)

    def get_config(self) -> E2CLIPConfig:
        return E2CLIPConfig(**self.config_kwargs)

    def input_ids(self, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = batch_size or self.batch_size
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(1, self.vocab_size - 2, (batch_size, self.seq_length), generator=generator)
        lengths = torch.randint(3, self.seq_length + 1, (batch_size,), generator=generator)
        attention_mask = (torch.arange(self.seq_length)[None] < lengths[:, None]).long()
        input_ids[torch.arange(batch_size), lengths - 1] = self.vocab_size - 1  # end token
        input_ids = input_ids.masked_fill(attention_mask == 0, 0)
        return input_ids, attention_mask

    def pixel_values(self, batch_size: int | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        return torch.randn(batch_size or self.batch_size, 3, self.image_size, self.image_size, generator=generator)

    def tags(self, tags_per_item: list[list[list[int] | None]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token id lists per item and entity (None = missing) -> padded ids and mask."""
        length = max(len(tag) for item in tags_per_item for tag in item if tag) + 2
        ids = torch.zeros(len(tags_per_item), len(tags_per_item[0]), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, item in enumerate(tags_per_item):
            for entity, tag in enumerate(item):
                if tag:
                    tokens = [self.vocab_size - 2, *tag, self.vocab_size - 1]
                    ids[row, entity, : len(tokens)] = torch.tensor(tokens)
                    mask[row, entity, : len(tokens)] = 1
        return ids, mask


@pytest.fixture
def tester() -> E2CLIPModelTester:
    return E2CLIPModelTester()


@pytest.fixture
def tiny_model(tester) -> E2CLIPModel:
    torch.manual_seed(0)
    return E2CLIPModel(tester.get_config()).eval()


FALLBACK_TEXTS = [
    "a red silk shirt by gucci",
    "blue denim jeans by levi",
    "a black leather jacket",
    "a red silk dress",
    "cotton composition fw2016 ss2017 season brand subcategory shirts dresses",
    "a photo of a cat",
]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A CLIP tokenizer made from the first merges of CLIP's real BPE list; where ../shared is
    absent, from merges learned on a few fashion texts (same format, smaller vocabulary)."""
    if BPE_PATH.exists():
        merges = read_merges(BPE_PATH, num_merges=TINY_NUM_MERGES)
    else:
        merges = learn_bpe_merges(FALLBACK_TEXTS * 3, num_merges=200)
    return write_clip_tokenizer_files(merges, tmp_path_factory.mktemp("tokenizer"), context_length=16)


@pytest.fixture(scope="session")
def tiny_processor(tokenizer_dir) -> E2CLIPProcessor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return E2CLIPProcessor(clip_image_processor(32), tokenizer, entities=TAG_ENTITIES)


@pytest.fixture
def tokenized_tester(tiny_processor) -> E2CLIPModelTester:
    """A tester whose vocabulary matches `tiny_processor`'s tokenizer."""
    tokenizer = tiny_processor.tokenizer
    tester = E2CLIPModelTester(vocab_size=len(tokenizer))
    tester.config_kwargs["text_config"].update(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    return tester


def catalog_with_a_broken_image(folder: Path) -> str:
    """A two-product JSONL catalog whose second image is not an image; returns its data spec."""
    import json

    Image.new("RGB", (40, 40), "red").save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"not an image")
    lines = [
        {"product_id": "good", "images": ["good.png"], "description": "a red shirt", "brand": "Aurel"},
        {"product_id": "broken", "images": ["broken.png"], "description": "a blue shirt", "brand": "Kato"},
    ]
    (folder / "catalog.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return f"jsonl:{folder / 'catalog.jsonl'}"


def run_without_the_project(script: str, folder: Path, *arguments: str, python: str = sys.executable) -> None:
    """Runs `script` (it blocks `import e2_hf` itself) in a fresh interpreter in `folder`: no
    PYTHONPATH, an empty offline Hugging Face cache. Fails the test with the script's stderr."""
    (folder / "fresh_process.py").write_text(script)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(folder / "hf-home"), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    completed = subprocess.run(
        [python, str(folder / "fresh_process.py"), *map(str, arguments)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]


def make_images(count: int, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="session")
def catalog(tmp_path_factory) -> Path:
    """A small hard synthetic catalog: FashionGen HDF5 files and catalog.jsonl with PNGs."""
    from e2_hf.synthetic import make_synthetic

    folder = tmp_path_factory.mktemp("catalog")
    make_synthetic(folder, products=50, seed=0, views=2, image_size=32, hard=True, progress=False)
    return folder


@pytest.fixture(scope="session")
def small_clip(catalog, tmp_path_factory) -> Path:
    """A small random CLIP (transformers' CLIPModel folder) with a tokenizer learned on the catalog."""
    from e2_hf.demo import make_small_clip
    from e2_hf.synthetic import all_texts
    from e2_hf.tokenization import build_tokenizer_from_texts

    tokenizer = build_tokenizer_from_texts(all_texts(catalog), tmp_path_factory.mktemp("tokenizer"), 300, 48)
    folder = tmp_path_factory.mktemp("clip")
    return make_small_clip(
        folder, tokenizer, image_size=32, patch_size=8, width=32, layers=4, heads=2, text_layers=2, projection_dim=16
    )


@pytest.fixture(scope="session")
def e2_model_dir(small_clip, tmp_path_factory) -> Path:
    """A saved (untrained) E2 model and processor made from `small_clip`."""
    folder = tmp_path_factory.mktemp("e2")
    torch.manual_seed(0)
    from_clip(str(small_clip), fusion_layers=[1, 2]).save_pretrained(folder)
    E2CLIPProcessor.from_pretrained(str(small_clip), entities=TAG_ENTITIES).save_pretrained(folder)
    return folder


def run_e2_hf(*arguments: str) -> subprocess.CompletedProcess:
    """`e2-hf ARGUMENTS` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "e2_hf.cli", *arguments], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def decap_folder(e2_model_dir, catalog, tmp_path_factory):
    """A DeCap captioner trained with the command on the 40 training texts until it writes most of them."""
    folder = tmp_path_factory.mktemp("captioner") / "decap"
    completed = run_e2_hf("train-captioner", "--model", str(e2_model_dir), "--train-data",
                        f"jsonl:{catalog / 'catalog.jsonl'}:train", "--output-dir", str(folder), "--recipe", "decap",
                        "--epochs", "80", "--batch-size", "8", "--decoder-layers", "2", "--decoder-width", "64",
                        "--decoder-heads", "2", "--decoder-vocab-size", "400", "--lr", "3e-3",
                        "--warmup-steps", "10")  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return folder
