"""Rendering helpers of BENCHMARKS.md, shared by the benchmark scripts (each renders its own section
with `render(result)`) and `make_report.py`."""

from __future__ import annotations

from pathlib import Path


def verdict(result: dict) -> str:
    return "**met**" if result["target_met"] else "**missed**"


def heading(title: str, setting: str) -> list[str]:
    return [f"## {title}", "", f"Setting: {setting}.", ""]


def table(headers: list[str], rows: list[list[str]], first_column_numeric: bool = False) -> list[str]:
    """A Markdown table; the first column left-aligned unless numeric, the others right-aligned."""
    alignment = ["---:" if first_column_numeric else "---"] + ["---:"] * (len(headers) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in (headers, alignment, *rows)]


def timing_table(result: dict) -> list[str]:
    rows = [[side, f"{row['median_s']:.3f}", f"{row['min_s']:.3f}"] for side, row in result["timings"].items()]
    return table(["side", "median s", "min s"], rows)


def mean_spread(value: dict, scale: float = 1.0, digits: int = 1) -> str:
    """`mean ± std` of a `{"mean", "std"}` summary; "—" where nothing was measured."""
    if value["mean"] is None:
        return "—"
    return f"{scale * value['mean']:.{digits}f} ± {scale * value['std']:.{digits}f}"


PROSE = Path(__file__).resolve().parent / "prose"


def prose(name: str, values: dict[str, object]) -> list[str]:
    """`benchmarks/prose/<name>.md` with its `{placeholders}` (Python format fields) filled from
    `values`. A paragraph (text between blank lines) quoting a value that is missing, because its
    run was not made, is left out, so the text never quotes a number that was not measured."""
    paragraphs = []
    for paragraph in (PROSE / f"{name}.md").read_text(encoding="utf-8").strip().split("\n\n"):
        try:
            paragraphs.append(paragraph.format_map(values))
        except KeyError:
            continue
    return "\n\n".join(paragraphs).split("\n") + [""]
