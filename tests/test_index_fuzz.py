"""Fuzzing the index open and search path: mutated FAISS files, shards, items and index.json give a
result or an `EmbeddingIndexError`, never another exception, a crash or unbounded memory."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = 400
MEMORY_BYTES = 3 << 30  # address space of the worker: torch and FAISS loaded take about 1.5 GiB of it


def test_mutated_index_files_give_a_result_or_an_index_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "tests.index_fuzz", str(tmp_path), str(CASES), "0", str(MEMORY_BYTES)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    last_case = [line for line in completed.stderr.splitlines() if line.startswith("case ")][-1:]
    died = f"the worker died ({completed.returncode}) at {last_case}: {completed.stderr[-3000:]}"
    assert completed.returncode == 0, died
    outcomes = json.loads((tmp_path / "outcomes.json").read_text())
    assert outcomes["other"] == []
    assert outcomes["result"] + outcomes["EmbeddingIndexError"] == CASES
    assert outcomes["result"] > 0 and outcomes["EmbeddingIndexError"] > CASES // 4  # both outcomes were reached
