"""sentence-transformers loads a saved E2 folder as remote code and encodes texts and images with
E2's global embeddings."""

import json
import textwrap

import pytest
import torch

from e2_hf import E2CLIPModel
from e2_hf.compat import projected_features
from e2_hf.modeling.packaging_e2clip import SENTENCE_TRANSFORMERS_FILES

from .conftest import make_images, run_without_the_project

pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed (the test extra has it)")

TEXTS = ["a red silk shirt by gucci", "blue denim jeans"]

ENCODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["e2_hf"] = None  # this project must not be importable
    import json
    import torch
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    folder, inputs_path, output_path = sys.argv[1:4]
    inputs = json.load(open(inputs_path))
    model = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
    images = [Image.open(path) for path in inputs["images"]]
    torch.save({
        "texts": model.encode(inputs["texts"], convert_to_tensor=True),
        "images": model.encode(images, convert_to_tensor=True),
        "normalized": model.encode(images, convert_to_tensor=True, normalize_embeddings=True),
        "similarity": model.similarity_fn_name,
    }, output_path)
    """
)


def test_a_saved_folder_encodes_like_get_features_in_a_process_without_the_project(
    tmp_path, tokenized_tester, tiny_processor
):
    torch.manual_seed(0)
    model = E2CLIPModel(tokenized_tester.get_config()).eval()
    folder = tmp_path / "e2-tiny"
    model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    image_paths = []
    for index, image in enumerate(make_images(3)):
        image_paths.append(str(tmp_path / f"image-{index}.png"))
        image.save(image_paths[-1])
    (tmp_path / "inputs.json").write_text(json.dumps({"texts": TEXTS, "images": image_paths}))
    run_without_the_project(ENCODE_SCRIPT, tmp_path, folder, tmp_path / "inputs.json", tmp_path / "outputs.pt")
    remote = torch.load(tmp_path / "outputs.pt", weights_only=True)

    from PIL import Image

    inputs = tiny_processor(text=TEXTS, images=[Image.open(path) for path in image_paths])
    with torch.no_grad():
        text_features = projected_features(model.get_text_features(inputs["input_ids"], inputs["attention_mask"]))
        image_features = projected_features(model.get_image_features(inputs["pixel_values"]))
    torch.testing.assert_close(remote["texts"], text_features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(remote["images"], image_features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(remote["normalized"], torch.nn.functional.normalize(image_features, dim=-1))
    assert remote["similarity"] == "cosine"


def test_saving_writes_the_sentence_transformers_files_but_keeps_a_users_own(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    for name, content in SENTENCE_TRANSFORMERS_FILES.items():
        assert json.loads((tmp_path / name).read_text()) == content
    normalize = {"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"}
    own_modules = [*SENTENCE_TRANSFORMERS_FILES["modules.json"], normalize]
    (tmp_path / "modules.json").write_text(json.dumps(own_modules))
    tiny_model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "modules.json").read_text()) == own_modules
