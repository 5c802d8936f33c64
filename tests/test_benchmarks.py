"""Every benchmark script runs at a toy size and the report generator reads its JSON (they never rot)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    "script", ["bench_inference", "bench_train_step", "bench_retrieval", "bench_data", "bench_quality", "bench_tagging"]
)
def test_benchmark_runs_at_toy_size(script, tmp_path):
    output = tmp_path / f"{script}.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), "--toy", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["machine"]["cores"] >= 1 and result["setting"]
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import make_report

        section = make_report.SECTIONS[result["benchmark"]](result)
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert section[0].startswith("## ") and len(section) > 3
