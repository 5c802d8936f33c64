"""The files of a saved E2 folder beyond what transformers writes: the Inference Endpoints handler,
the embedding API it uses, and the files sentence-transformers reads.

transformers copies the code files the Auto classes load (and their relative imports, this one
included) when it saves a registered class; `write_deployment_files` adds the rest. Part of the Hub
code: it imports only the standard library.
"""

from __future__ import annotations

import json
import os
import shutil

# code files no Auto class imports, copied from beside this file: the Inference Endpoints handler and
# `E2CLIPEmbedder` (loaded by the handler from the folder). A folder loaded as remote code from the
# Hub cache holds only the imported modules, so its re-saves have what the cache had.
DEPLOYMENT_CODE_FILES = ("handler.py", "embedding_e2clip.py")

# sentence-transformers (6.x) encodes texts and images of the folder with `get_text_features` /
# `get_image_features`: E2's global embeddings, unnormalised (`normalize_embeddings=True` normalises).
SENTENCE_TRANSFORMERS_FILES = {
    "modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}],
    "sentence_bert_config.json": {
        "transformer_task": "feature-extraction",
        "modality_config": {
            "text": {"method": "get_text_features", "method_output_name": "pooler_output"},
            "image": {"method": "get_image_features", "method_output_name": "pooler_output"},
        },
        "module_output_name": "sentence_embedding",
    },
    "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine"},
}


def write_deployment_files(save_directory: str | os.PathLike) -> None:
    """Copies `DEPLOYMENT_CODE_FILES` next to the weights, and writes each file of
    `SENTENCE_TRANSFORMERS_FILES` the folder does not have yet (a sentence-transformers pipeline
    saved there, with more modules, keeps its own)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for name in DEPLOYMENT_CODE_FILES:
        source = os.path.join(here, name)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(save_directory, name))
    for name, content in SENTENCE_TRANSFORMERS_FILES.items():
        path = os.path.join(save_directory, name)
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as file:
                json.dump(content, file, indent=2)
