"""Publishing to a real Hub-compatible HTTP server on 127.0.0.1 (tests/hub_server.py).

huggingface_hub reads HF_ENDPOINT when it is imported, so every Hub client runs in a subprocess
whose environment points at the loopback server, with a fresh cache.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from e2_hf import E2CLIPModel
from e2_hf.conversion.push_to_hub import render_model_card, validate_model_folder

from .conftest import make_images
from .hub_server import LoopbackHub

TOKEN = "hf_loopback_test_token"
METRICS = {
    "full": {
        "image_to_text": {"R@1": 12.5, "R@5": 40.0, "R@10": 55.0},
        "text_to_image": {"R@1": 11.0, "R@5": 38.0, "R@10": 52.5},
        "sumr": 209.0,
    },
}


@pytest.fixture
def hub():
    with LoopbackHub(TOKEN) as server:
        yield server


@pytest.fixture
def model_dir(tmp_path, tokenized_tester, tiny_processor):
    torch.manual_seed(0)
    folder = tmp_path / "e2-tiny"
    E2CLIPModel(tokenized_tester.get_config()).eval().save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder


def hub_env(hub, home) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN=TOKEN,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        TRANSFORMERS_VERBOSITY="error",
    )
    return env


def run_cli(hub, home, *args):
    return subprocess.run(
        [sys.executable, "-m", "e2_hf.cli", *args], env=hub_env(hub, home), capture_output=True, text=True, timeout=600
    )


LOAD_FROM_HUB = textwrap.dedent(
    """
    import json, sys
    sys.modules["e2_hf"] = None  # this project must not be importable
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline

    repo_id, image_path, output = sys.argv[1:4]
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True)
    image = Image.open(image_path)
    inputs = processor(text=["a red shirt", "blue jeans"], images=[image], tags=[{"brand": "gucci"}])
    with torch.no_grad():
        outputs = model(**{k: v for k, v in inputs.items() if not k.startswith("tag")})
    classifier = pipeline("zero-shot-image-classification", model=repo_id, trust_remote_code=True)
    scores = classifier(image, candidate_labels=["a red shirt", "blue jeans"], hypothesis_template="{}")
    json.dump({"image_embeds": outputs.image_embeds.tolist(), "text_embeds": outputs.text_embeds.tolist(),
               "region_embeds": outputs.region_embeds.tolist(),
               "zero_shot": {item["label"]: item["score"] for item in scores}}, open(output, "w"))
    """
)


def load_from_hub(hub, tmp_path, repo_id: str) -> dict:
    image_path = tmp_path / "image.png"
    make_images(1)[0].save(image_path)
    script = tmp_path / "load_from_hub.py"
    script.write_text(LOAD_FROM_HUB)
    home = tmp_path / "fresh-home"
    completed = subprocess.run(
        [sys.executable, str(script), repo_id, str(image_path), str(tmp_path / "out.json")],
        env=hub_env(hub, home),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def local_outputs(model_dir, tiny_processor):
    model = E2CLIPModel.from_pretrained(model_dir).eval()
    inputs = tiny_processor(text=["a red shirt", "blue jeans"], images=make_images(1))
    with torch.no_grad():
        outputs = model(**inputs)
    return outputs


def test_push_then_load_through_the_endpoint(hub, model_dir, tmp_path, tiny_processor):
    metrics_path = tmp_path / "metrics.json"
    metrics_path.write_text(json.dumps(METRICS))
    push = [
        "push",
        "--model",
        str(model_dir),
        "--repo-id",
        "tester/e2-tiny",
        "--metrics",
        str(metrics_path),
        "--base-model",
        "openai/clip-vit-base-patch32",
        "--license",
        "mit",
    ]
    (model_dir / "onnx").mkdir()
    (model_dir / "onnx" / "image_encoder.onnx").write_bytes(b"a graph")  # uploaded only with --with-onnx
    completed = run_cli(hub, tmp_path / "home", *push)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "verified" in completed.stdout

    files = hub.files_of("tester/e2-tiny")
    assert not any(name.startswith("onnx/") for name in files)
    assert {
        "model.safetensors",
        "config.json",
        "modeling_e2clip.py",
        "processing_e2clip.py",
        "image_processing_e2clip.py",
        "README.md",
        "processor_config.json",
        "tokenizer_config.json",
        "modules.json",  # sentence-transformers
        "sentence_bert_config.json",
    } <= set(files)
    readme = files["README.md"].decode()
    for expected in (
        "library_name: transformers",
        "pipeline_tag: zero-shot-image-classification",
        "inference: false",
        "base_model: openai/clip-vit-base-patch32",
        "model-index:",
        "value: 12.5",
        "license: mit",
        'AutoModel.from_pretrained("tester/e2-tiny"',
    ):
        assert expected in readme, expected
    for name, content in files.items():  # no token, no local path in anything uploaded
        assert TOKEN.encode() not in content, name
        assert str(tmp_path).encode() not in content, name

    remote = load_from_hub(hub, tmp_path, "tester/e2-tiny")
    local = local_outputs(model_dir, tiny_processor)
    for name in ("image_embeds", "text_embeds", "region_embeds"):
        torch.testing.assert_close(torch.tensor(remote[name]), local[name], rtol=1e-5, atol=1e-6)
    expected = local.logits_per_image.softmax(-1)[0].tolist()
    assert [remote["zero_shot"]["a red shirt"], remote["zero_shot"]["blue jeans"]] == pytest.approx(expected, abs=1e-5)

    # a second push of the unchanged folder makes no commit
    commits = hub.commit_count("tester/e2-tiny")
    again = run_cli(hub, tmp_path / "home", *push)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing changed" in again.stdout
    assert hub.commit_count("tester/e2-tiny") == commits


def test_push_to_a_branch_and_a_failed_upload(hub, model_dir, tmp_path):
    push = ["push", "--model", str(model_dir), "--repo-id", "tester/e2-branch", "--revision", "experiment"]
    (model_dir / "onnx").mkdir()
    (model_dir / "onnx" / "image_encoder.onnx").write_bytes(b"a graph")  # push does not read it
    completed = run_cli(hub, tmp_path / "home", *push, "--private", "--with-onnx")
    assert completed.returncode == 0, completed.stderr[-3000:]
    repo = hub.hub.repos["tester/e2-branch"]
    assert repo.private and set(repo.branches) == {"main", "experiment"}
    assert "model.safetensors" in hub.files_of("tester/e2-branch", "experiment")
    assert hub.files_of("tester/e2-branch", "experiment")["onnx/image_encoder.onnx"] == b"a graph"
    assert "model.safetensors" not in hub.files_of("tester/e2-branch", "main")

    (model_dir / "notes.txt").write_text("a change")
    before = dict(repo.branches)
    hub.hub.fail_commits = True
    failed = run_cli(hub, tmp_path / "home", *push)
    assert failed.returncode != 0
    assert (
        "upload to tester/e2-branch@experiment failed" in failed.stderr and "remote repo is unchanged" in failed.stderr
    )
    assert repo.branches == before


def test_model_push_to_hub_and_missing_repos(hub, model_dir, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from huggingface_hub import hf_hub_download, model_info
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
        from transformers import AutoProcessor
        from e2_hf import E2CLIPModel, E2CLIPProcessor

        model = E2CLIPModel.from_pretrained({str(model_dir)!r})
        model.push_to_hub("tester/e2-pushed")
        E2CLIPProcessor.from_pretrained({str(model_dir)!r}).push_to_hub("tester/e2-pushed")
        processor = AutoProcessor.from_pretrained("tester/e2-pushed", trust_remote_code=True)
        assert processor.entities == ["brand", "season", "subcategory", "composition"], processor
        assert "modeling_e2clip.py" in [s.rfilename for s in model_info("tester/e2-pushed").siblings]
        reloaded = E2CLIPModel.from_pretrained("tester/e2-pushed")
        assert all((a == b).all() for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
        for call, error in ((lambda: model_info("tester/missing"), RepositoryNotFoundError),
                            (lambda: hf_hub_download("tester/e2-pushed", "config.json", revision="nope"),
                             RevisionNotFoundError)):
            try:
                call()
            except error as caught:
                print(type(caught).__name__)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], env=hub_env(hub, tmp_path / "home"), capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split() == ["RepositoryNotFoundError", "RevisionNotFoundError"]

    missing = run_cli(hub, tmp_path / "home", "push", "--model", str(tmp_path / "nowhere"), "--repo-id", "tester/x")
    assert missing.returncode != 0 and "is not a folder" in missing.stderr
    env = hub_env(hub, tmp_path / "home")
    env.pop("HF_TOKEN")
    unauthorised = subprocess.run(
        [sys.executable, "-m", "e2_hf.cli", "push", "--model", str(model_dir), "--repo-id", "tester/no-token"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert unauthorised.returncode != 0 and "cannot prepare tester/no-token" in unauthorised.stderr


def test_validation_names_every_problem(model_dir, tmp_path):
    validate_model_folder(model_dir)
    (model_dir / "pytorch_model.bin").write_bytes(b"pickle")
    (model_dir / "processing_e2clip.py").unlink()
    (model_dir / "notes.json").write_text(json.dumps({"source": str(model_dir.resolve())}))
    with pytest.raises(ValueError) as error:
        validate_model_folder(model_dir)
    message = str(error.value)
    assert "missing processing_e2clip.py" in message
    assert "pytorch_model.bin: pickled weights" in message
    assert "local path in notes.json: " + str(model_dir.resolve()) in message


def test_nothing_with_an_absolute_local_path_is_uploaded(hub, model_dir, tmp_path):
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "data_root": "/mnt/catalogs/spring"}))
    pushed = run_cli(hub, tmp_path / "home", "push", "--model", str(model_dir), "--repo-id", "tester/leaky")
    assert pushed.returncode != 0 and "local path in config.json: /mnt/catalogs/spring" in pushed.stderr
    (model_dir / "config.json").write_text(json.dumps(config))
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    pushed = run_cli(hub, tmp_path / "home", "push", "--model", str(model_dir), "--repo-id", "tester/leaky",
                     "--base-model", "/opt/models/clip-base", "--dataset-name", "/home/someone/catalog",
                     "--metrics", str(tmp_path / "metrics.json"))  # fmt: skip
    assert pushed.returncode != 0 and "Traceback" not in pushed.stderr
    assert "README.md: /opt/models/clip-base" in pushed.stderr and "README.md: /home/someone/catalog" in pushed.stderr
    assert "tester/leaky" not in hub.hub.repos  # refused before anything was created


def test_model_card_without_metrics(model_dir):
    card = render_model_card(model_dir, "tester/e2-tiny")
    assert "model-index:" not in card and "No evaluation results" in card
    assert "Entities: brand, season, subcategory, composition" in card and "{{" not in card


PUSH_AND_LOAD_DATASET = textwrap.dedent(
    """
    import json, sys
    from datasets import load_dataset
    from huggingface_hub import HfApi

    folder, repo_id = sys.argv[1], "tester/shop-embeddings"
    HfApi().create_repo(repo_id, repo_type="dataset")
    HfApi().upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset")
    products = load_dataset(repo_id, split="train")  # straight from the Hub, as a user would
    print(json.dumps({"ids": list(products["product_id"]), "first": products[0]["region_embeds_brand"]}))
    """
)


def test_an_exported_index_is_pushed_as_a_dataset_repo_and_loads_back(hub, tmp_path):
    pytest.importorskip("datasets", reason="the export is read with datasets (the test extra has it)")
    import numpy as np

    from e2_hf.search import EmbeddingIndex
    from e2_hf.search.export import export_dataset

    index = EmbeddingIndex.create(tmp_path / "index", "e2", "fingerprint", ["brand"], 8, thumbnail_size=4)
    vectors = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    items = [{"product_id": f"p{row}", "description": "", "tags": {"brand": "b"}, "source": "s"} for row in range(6)]
    index.add(vectors, vectors[:, None], np.zeros((6, 4, 4, 3), np.uint8), items, source="s")
    export_dataset(index, tmp_path / "dataset")
    command = [sys.executable, "-c", PUSH_AND_LOAD_DATASET, str(tmp_path / "dataset")]
    environment = hub_env(hub, tmp_path / "home")
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert loaded["ids"] == [f"p{row}" for row in range(6)]
    np.testing.assert_allclose(loaded["first"], vectors[0].numpy(), atol=1e-6)
