"""Captioner folders under attack: a decoder that asks to run its own code, damaged or crafted
weights, tokenizers and configs, two runs writing one folder, an output that cannot be written."""

import builtins
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from e2_hf.captioning import CaptionerError, CaptionerTrainingArguments, E2Captioner, train_captioner
from e2_hf.captioning.captioner import load_decoder

from .conftest import run_e2_hf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def captioner_copy(decap_folder, tmp_path) -> Path:
    return shutil.copytree(decap_folder, tmp_path / "captioner")


def _with_own_code(folder: Path, config_name: str, marker: Path) -> None:
    """Makes `folder` (a decoder) ask for its own code, a module that creates `marker` when imported."""
    (folder / "hostile.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    path = folder / config_name
    record = json.loads(path.read_text())
    record["auto_map"] = {"AutoConfig": "hostile.HostileConfig", "AutoModelForCausalLM": "hostile.HostileModel",
                          "AutoTokenizer": ["hostile.HostileTokenizer", None]}  # fmt: skip
    if config_name == "config.json":
        record["model_type"] = "hostile-lm"  # unknown to transformers: only the folder's code could load it
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("config_name", ["config.json", "tokenizer_config.json"])
def test_a_decoder_that_asks_to_run_its_own_code_is_refused_without_a_prompt(captioner_copy, tmp_path, monkeypatch,
                                                                             config_name):  # fmt: skip
    marker = tmp_path / "code-ran"
    _with_own_code(captioner_copy / "decoder", config_name, marker)
    prompts = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": prompts.append(prompt) or "y")  # a user who says yes
    with pytest.raises(CaptionerError, match=rf"decoder/{config_name} asks to run the folder's own code"):
        E2Captioner.from_pretrained(captioner_copy)
    assert prompts == [] and not marker.exists()


def test_train_captioner_refuses_a_decoder_with_its_own_code(decap_folder, e2_model_dir, catalog, tmp_path,
                                                             monkeypatch):  # fmt: skip
    decoder = shutil.copytree(decap_folder / "decoder", tmp_path / "decoder")
    marker = tmp_path / "code-ran"
    _with_own_code(decoder, "config.json", marker)
    monkeypatch.setattr(builtins, "input", lambda prompt="": "y")
    args = CaptionerTrainingArguments(model=str(e2_model_dir), train_data=f"jsonl:{catalog / 'catalog.jsonl'}:train",
                                      output_dir=str(tmp_path / "out"), decoder=str(decoder), epochs=1)  # fmt: skip
    with pytest.raises(CaptionerError, match="asks to run the folder's own code"):
        train_captioner(args, log=lambda line: None)
    assert not marker.exists() and not (tmp_path / "out").exists()


def _resave(path: Path, change) -> None:
    save_file(change(load_file(path)), path)


def _tokenizer_with_end_token_id(folder: Path, token_id: int) -> None:
    path = folder / "decoder" / "tokenizer.json"
    record = json.loads(path.read_text())
    record["added_tokens"][0]["id"] = token_id
    record["model"]["vocab"]["<|endoftext|>"] = token_id
    path.write_text(json.dumps(record))


def _pickled_weights(folder: Path) -> None:
    decoder = folder / "decoder"
    torch.save(load_file(decoder / "model.safetensors"), decoder / "pytorch_model.bin")
    (decoder / "model.safetensors").unlink()


DAMAGES = {
    "huge-token-id": (lambda f: _tokenizer_with_end_token_id(f, 10**6), r"outside the decoder's \d+ embeddings"),
    "mapping-missing": (lambda f: (f / "mapping.safetensors").unlink(), r"mapping.safetensors is missing"),
    "mapping-misshaped": (lambda f: _resave(f / "mapping.safetensors", lambda t: {**t, "layers.0.weight":
                          torch.zeros(3, 3)}), r"mapping.safetensors: layers.0.weight is torch.float32 \[3, 3\]"),
    "mapping-truncated": (lambda f: (f / "mapping.safetensors").write_bytes((f / "mapping.safetensors").read_bytes()
                          [:-50]), r"mapping.safetensors is not a readable safetensors file"),
    "memory-integer": (lambda f: _resave(f / "memory.safetensors", lambda t: {"memory": t["memory"].long()}),
                       r"memory is torch.int64 \[\d+, 16\], the captioner needs float"),
    "memory-misnamed": (lambda f: _resave(f / "memory.safetensors", lambda t: {"texts": t["memory"]}),
                        r"holds \['texts'\]; a captioner memory holds one tensor, 'memory'"),
    "memory-misshaped": (lambda f: _resave(f / "memory.safetensors",
                                           lambda t: {"memory": t["memory"][:, :5].contiguous()}),
                         r"memory is torch.float32 \[\d+, 5\]"),
    "memory-nan": (lambda f: _resave(f / "memory.safetensors", lambda t: {"memory": t["memory"] * float("nan")}),
                   r"memory.safetensors holds NaN or infinite weights"),
    "pickled-decoder": (_pickled_weights, r"the decoder in .*decoder cannot be loaded"),
    "garbage-tokenizer": (lambda f: (f / "decoder" / "tokenizer.json").write_bytes(b"\x00garbage{"),
                          r"the tokenizer in .*decoder cannot be read"),
    "huge-config": (lambda f: (f / "captioner_config.json").write_text(json.dumps(
        {**json.loads((f / "captioner_config.json").read_text()), "embedding_dim": 10**12})),
        r"embedding_dim must be a number from 1 to 65536"),
}  # fmt: skip


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_captioner_files_are_named(captioner_copy, damage):
    change, message = DAMAGES[damage]
    change(captioner_copy)
    with pytest.raises(CaptionerError, match=message):
        E2Captioner.from_pretrained(captioner_copy)


@pytest.mark.parametrize("damage", ["memory-nan", "pickled-decoder"])
def test_the_caption_command_refuses_a_damaged_captioner_in_one_line(captioner_copy, e2_model_dir, catalog, damage):
    change, message = DAMAGES[damage]
    change(captioner_copy)
    completed = run_e2_hf("caption", "--model", str(e2_model_dir), "--captioner", str(captioner_copy),
                          "--image", str(catalog / "images" / "000000_0.png"))  # fmt: skip
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1].startswith("e2-hf caption: error:")


def test_the_config_names_the_backbone_without_a_local_path(decap_folder, e2_model_dir):
    config = json.loads((decap_folder / "captioner_config.json").read_text())
    assert config["backbone_name"] == e2_model_dir.name  # trained with an absolute --model path


HOLDER = textwrap.dedent(
    """
    import sys, time
    from e2_hf.locking import exclusive_lock
    with exclusive_lock(sys.argv[1], wait=False):
        print("held", flush=True)
        time.sleep(120)
    """
)


def test_a_second_run_into_a_folder_being_written_is_refused(e2_model_dir, catalog, tmp_path):
    output = tmp_path / "captioner"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / ".captioner.lock")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"  # another run holds the folder's lock
        args = CaptionerTrainingArguments(model=str(e2_model_dir), output_dir=str(output), epochs=1,
                                          train_data=f"jsonl:{catalog / 'catalog.jsonl'}:train")  # fmt: skip
        with pytest.raises(CaptionerError, match=f"another e2-hf train-captioner is writing {output}"):
            train_captioner(args, log=lambda line: None)
    finally:
        holder.kill()
        holder.wait()
    assert not output.exists()
    train_captioner(args, log=lambda line: None)  # free again
    assert (output / "captioner_config.json").is_file()


def test_an_output_that_cannot_be_written_is_refused_before_training(e2_model_dir, tmp_path):
    read_only = Path("/sys/e2-hf-captioner")  # sysfs: read-only, for root too
    try:
        read_only.mkdir()
    except OSError:
        pass
    else:
        read_only.rmdir()
        pytest.skip("/sys is writable here: no read-only folder to write into")
    args = CaptionerTrainingArguments(model=str(e2_model_dir), output_dir=str(read_only / "out"),
                                      train_data="jsonl:does-not-exist.jsonl")  # fmt: skip
    with pytest.raises(CaptionerError, match=f"{read_only / 'out'} cannot be written"):
        train_captioner(args, log=lambda line: None)  # refused before the data is even read


def test_load_decoder_passes_no_trust_to_transformers(decap_folder):
    decoder, tokenizer = load_decoder(str(decap_folder / "decoder"), safetensors_only=True)
    assert tokenizer.eos_token_id < decoder.get_input_embeddings().num_embeddings
