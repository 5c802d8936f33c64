"""mkdocs hook: the generated benchmark report and its figures become part of the site.

`BENCHMARKS.md` (written by `benchmarks/make_report.py` from `benchmarks/results/*.json`) and the
figures under `benchmarks/results/` stay where the benchmark scripts write them; the site serves
them as `benchmark-results.md` and `benchmarks/results/...`, so no copy can go stale.
"""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    files.append(File.generated(config, "benchmark-results.md", abs_src_path=str(ROOT / "BENCHMARKS.md")))
    for figure in sorted((ROOT / "benchmarks" / "results").rglob("*.png")):
        files.append(File.generated(config, figure.relative_to(ROOT).as_posix(), abs_src_path=str(figure)))
    return files
