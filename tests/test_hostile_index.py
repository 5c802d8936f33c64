"""Index folders and commits under attack: files named outside the folder, crafted FAISS files,
readers during commits, a model folder as the output, a disk that fills up during an add."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest

from e2_hf.search import EmbeddingIndex, EmbeddingIndexError
from e2_hf.search.engine import SearchSettings
from e2_hf.search.index import writer_lock

from .index_files import DIM, add_random_rows, open_and_search, random_index
from .test_index_integrity import index_command, rewrite_metadata

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def index_folder(tmp_path) -> Path:
    return random_index(tmp_path / "index").folder


def _verify(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "e2_hf.cli", "index", "--verify", "--output", str(folder)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("where", ["absolute", "parent", "link"])
@pytest.mark.parametrize("kind", ["shard", "faiss"])
def test_files_named_outside_the_index_folder_are_refused(index_folder, tmp_path, where, kind):
    metadata = json.loads((index_folder / "index.json").read_text())
    records = metadata["shards"] if kind == "shard" else metadata["search"]["files"]
    inside = index_folder / records[0]["file"]
    outside = tmp_path / "elsewhere" / inside.name
    outside.parent.mkdir()
    shutil.copy(inside, outside)  # the same bytes: sizes and checksums match
    if where == "link":
        inside.unlink()
        inside.symlink_to(outside)
    else:
        name = str(outside) if where == "absolute" else f"../elsewhere/{inside.name}"
        records[0]["file"] = name
        rewrite_metadata(index_folder, lambda _: metadata)
    expected = "outside the index folder" if where == "link" else "is not a plain file name in the index folder"
    with pytest.raises(EmbeddingIndexError, match=expected):
        open_and_search(index_folder)
    try:  # a name is refused when index.json is read, a link when the file is opened
        problems = EmbeddingIndex(index_folder).verify()
    except EmbeddingIndexError as error:
        problems = [str(error)]
    assert any(expected in problem for problem in problems)
    if (kind, where) == ("shard", "absolute"):  # and once through the command line
        completed = _verify(index_folder)
        assert completed.returncode != 0 and "all checksums match" not in completed.stdout
        assert expected in completed.stderr and "Traceback" not in completed.stderr


def test_a_crafted_faiss_file_is_refused_by_its_checksum_before_faiss_reads_it(index_folder, monkeypatch):
    recorded = EmbeddingIndex(index_folder).metadata["search"]["files"][0]
    path = index_folder / recorded["file"]
    crafted = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)  # another type, same size below
    crafted.add(np.random.default_rng(0).standard_normal((70, DIM)).astype(np.float32))
    data = faiss.serialize_index(crafted).tobytes()
    path.write_bytes(data[: recorded["bytes"]].ljust(recorded["bytes"], b"\xff"))

    def unchecked_read(*_):
        raise AssertionError("FAISS parsed a file whose checksum was not checked")

    monkeypatch.setattr(faiss, "read_index", unchecked_read)
    with pytest.raises(EmbeddingIndexError, match=rf"{recorded['file']}: its bytes differ from the SHA-256"):
        open_and_search(index_folder)
    rewrite_metadata(index_folder, lambda m: {**m, "search": {**m["search"], "files": [
        {k: v for k, v in f.items() if k != "sha256"} for f in m["search"]["files"]]}})  # fmt: skip
    with pytest.raises(EmbeddingIndexError, match="records no checksum.*--rebuild"):
        open_and_search(index_folder)


WRITER = textwrap.dedent(
    """
    import sys
    from e2_hf.search import EmbeddingIndex
    from tests.index_files import add_random_rows
    index = EmbeddingIndex(sys.argv[1])
    for commit in range(int(sys.argv[2])):
        add_random_rows(index, 7, seed=100 + commit)
    """
)


def test_readers_see_one_commit_or_the_next_never_a_mix(index_folder):
    """A reader loop against a writer committing again and again: every read is whole."""
    commits = 40
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(index_folder), str(commits)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    reads, rows_seen = 0, set()
    try:
        while writer.poll() is None or reads == 0:
            index = EmbeddingIndex(index_folder)
            assert open_and_search(index_folder) > 0
            assert len(index.items) == len(index)
            rows_seen.add(len(index))
            reads += 1
    finally:
        writer.wait(timeout=300)
    assert writer.returncode == 0, writer.stderr.read()[-3000:]
    assert len(EmbeddingIndex(index_folder)) == 70 + 7 * commits
    assert reads >= 2 and len(rows_seen) >= 2, (reads, rows_seen)  # the reads overlapped the commits


def test_an_index_is_never_written_into_a_folder_that_holds_something_else(e2_model_dir, catalog, tmp_path):
    model = shutil.copytree(e2_model_dir, tmp_path / "model")
    before = sorted(path.name for path in model.iterdir())
    completed = subprocess.run(index_command(model, f"jsonl:{catalog / 'catalog.jsonl'}", model), capture_output=True,
                               text=True, timeout=300)  # fmt: skip
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert f"{model} is not empty and holds no index (config.json" in completed.stderr
    assert sorted(path.name for path in model.iterdir()) == before  # not even a lock file


def _limit_file_size(size: int) -> None:
    """A disk that takes no file larger than `size` bytes: writes past it fail (EFBIG), as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


def test_a_disk_filling_up_at_the_shard_write_keeps_the_last_commit(e2_model_dir, catalog, tmp_path):
    folder = tmp_path / "index"
    data = f"jsonl:{catalog / 'catalog.jsonl'}"
    first = subprocess.run(index_command(e2_model_dir, data + ":train", folder), capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    committed, shards = len(EmbeddingIndex(folder)), len(EmbeddingIndex(folder).metadata["shards"])
    largest = max(path.stat().st_size for path in folder.iterdir() if path.suffix == ".index")
    full = subprocess.run(index_command(e2_model_dir, data, folder) + ["--skip-existing"], capture_output=True,
                          text=True, timeout=300, preexec_fn=lambda: _limit_file_size(largest * 2))  # fmt: skip
    assert full.returncode != 0 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert f"shard-{shards:05d}.safetensors failed (Error while serializing" in full.stderr
    assert f"the index keeps its last commit ({committed} rows)" in full.stderr
    assert not (folder / f"shard-{shards:05d}.safetensors").exists()
    assert len(EmbeddingIndex(folder)) == committed and open_and_search(folder) > 0


def test_a_disk_filling_up_at_the_faiss_write_is_named_and_the_rows_stay(tmp_path):
    index = random_index(tmp_path / "index", settings=SearchSettings(index_type="hnsw"))  # large FAISS files
    index_folder = index.folder
    limit = 2 * (index_folder / "items.jsonl").stat().st_size
    assert limit < min(f["bytes"] for f in index.metadata["search"]["files"])  # the shard and items fit, FAISS not
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.getsignal(signal.SIGXFSZ)
    try:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        with pytest.raises(EmbeddingIndexError, match=r"writing .*faiss-\d+-0.index failed .*the rows are committed"):
            add_random_rows(index, 10, seed=7)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    index = EmbeddingIndex(index_folder)
    assert len(index) == 80 and open_and_search(index_folder) > 0  # the new rows are searched from the shards
    assert not [path for path in index_folder.glob("faiss-*.index") if path.name not in
                {f["file"] for f in index.metadata["search"]["files"]} and path.stat().st_size == 0]  # fmt: skip
    with writer_lock(index_folder):
        index.commit_search_indices()
    assert EmbeddingIndex(index_folder).verify() == []


def test_search_settings_beyond_their_bounds_are_refused(index_folder):
    rewrite_metadata(index_folder, lambda m: {**m, "search": {**m["search"], "settings": {
        **m["search"]["settings"], "refine_factor": 10**9}}})  # fmt: skip
    with pytest.raises(EmbeddingIndexError, match="refine_factor must be an integer from 0 to 4096"):
        EmbeddingIndex(index_folder)
    assert os.path.exists(index_folder / "index.json")
