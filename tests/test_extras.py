"""Optional dependencies: a user of the model alone needs none of them, and each subsystem that does
names the extra that brings it (here they are installed, so each test hides them from a fresh process)."""

import json
import subprocess
import sys
import textwrap

OPTIONAL = ("faiss", "accelerate", "h5py", "pymilvus")
HIDE = "import sys\nfor name in " + repr(OPTIONAL) + ":\n    sys.modules[name] = None  # importing it fails\n"

MODEL_USER = textwrap.dedent(
    """
    import json, sys, tempfile
    import torch
    from transformers import AutoModel
    import e2_hf
    from e2_hf import E2CLIPConfig, E2CLIPModel
    import e2_hf.search, e2_hf.data, e2_hf.training  # importable; only running them needs the extras
    from e2_hf.extras import MissingExtraError
    from e2_hf.search.engine import import_faiss
    from e2_hf.search.milvus import open_store
    from e2_hf.data import open_catalog
    from e2_hf.training.trainer import TrainingArguments

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32,
                  patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=99)
    folder = tempfile.mkdtemp()
    E2CLIPModel(E2CLIPConfig(vision_config=vision, text_config=text, fusion_layers=[1, 2])).save_pretrained(folder)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    outputs = model(pixel_values=torch.randn(1, 3, 32, 32))
    messages = []
    for attempt in (import_faiss, lambda: open_catalog("fashiongen:" + folder + "/catalog.h5"),
                    lambda: e2_hf.training.trainer.prepare_run(TrainingArguments(model="m", train_data="d",
                                                                                 output_dir=folder)),
                    lambda: open_store("milvus://localhost:19530")):
        try:
            attempt()
        except MissingExtraError as error:
            messages.append(str(error))
    print(json.dumps({"regions": list(outputs.region_embeds.shape), "messages": messages,
                      "loaded": sorted(name for name in ("faiss", "accelerate", "h5py", "pymilvus")
                                       if sys.modules.get(name) is not None)}))
    """
)


def test_the_model_needs_no_extra_and_each_subsystem_names_its_own(tmp_path):
    completed = subprocess.run([sys.executable, "-c", HIDE + MODEL_USER], capture_output=True, text=True,
                               timeout=300, cwd=tmp_path)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["regions"][0] == 1 and result["loaded"] == []
    assert result["messages"] == [
        "searching an index needs faiss-cpu: pip install 'e2-hf[search]' (or pip install faiss-cpu)",
        "reading a FashionGen HDF5 catalog needs h5py: pip install 'e2-hf[hdf5]' (or pip install h5py)",
        "e2-hf train needs accelerate: pip install 'e2-hf[train]' (or pip install accelerate)",
        "a Milvus index needs pymilvus: pip install 'e2-hf[milvus]' (or pip install pymilvus)",
    ]


def test_the_command_line_names_the_missing_extra_in_one_line(tmp_path):
    command = HIDE + "from e2_hf.cli import main\nmain(sys.argv[1:])\n"
    arguments = ["make-synthetic", "--output-dir", str(tmp_path / "s"), "--products", "4", "--views", "1"]
    completed = subprocess.run([sys.executable, "-c", command, *arguments], capture_output=True, text=True,
                               timeout=300)  # fmt: skip
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == (
        "e2-hf make-synthetic: error: writing the synthetic catalog's FashionGen HDF5 file needs h5py: "
        "pip install 'e2-hf[hdf5]' (or pip install h5py)"
    )
