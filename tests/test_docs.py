"""The README and the docs site: short README, links that resolve, generated figures, and every
documented `e2-hf` command accepted by the command line as written."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def code_blocks(page: Path, languages: tuple[str, ...]) -> list[str]:
    return [match.group(2) for match in FENCE.finditer(page.read_text()) if match.group(1) in languages]


def shell_words(line: str) -> list[str]:
    """The words of a shell line as bash splits them: `#` starts a comment only at the start of a
    word (`milvus://host:19530#shop` is one word), never inside quotes."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    words = []
    for word in lexer:
        if word.startswith("#") and not _quoted_at(line, word):
            break
        words.append(word)
    return words


def _quoted_at(line: str, word: str) -> bool:
    """Whether `word`'s first appearance in `line` follows an opening quote."""
    start = line.find(word)
    return start > 0 and line[start - 1] in "'\""


def documented_commands(block: str) -> list[list[str]]:
    """Each `e2-hf ...` command of a shell block as its arguments (continuations joined, comments
    and `&&` chains split, `accelerate launch ... -m e2_hf.cli` included)."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shell_words(part)
            if "e2-hf" in words:
                commands.append(words[words.index("e2-hf") + 1 :])
            elif words[-2:] and "e2_hf.cli" in words:
                commands.append(words[words.index("e2_hf.cli") + 1 :])
    return commands


def test_the_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    targets = [match.group(1) for match in LINK.finditer(readme) if "://" not in match.group(1)]
    assert targets and all((ROOT / target).is_file() for target in targets), targets


def test_the_summary_tables_are_the_results_files():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import make_report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    expected = "\n".join(make_report.summary_table({name: make_report.load(name) for name in make_report.SECTIONS}))
    for page in (ROOT / "README.md", ROOT / "docs" / "benchmarks.md"):
        text = page.read_text()
        block = text[text.index(make_report.SUMMARY_START) + len(make_report.SUMMARY_START) : text.index(
            make_report.SUMMARY_END)].strip()  # fmt: skip
        assert block == expected, f"{page.name}: rerun python benchmarks/make_report.py"


def test_the_site_builds_with_no_broken_link_or_anchor(tmp_path):
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "site" / "benchmark-results" / "index.html").is_file()  # BENCHMARKS.md, through the hook


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_documented_command_is_accepted_as_written(page):
    from e2_hf.cli import COMMANDS, build_parser

    for block in code_blocks(page, ("bash", "sh", "console")):
        for arguments in documented_commands(block):
            if not arguments or arguments[0] in ("--help", "--version") or "--help" in arguments:
                continue
            assert arguments[0] in COMMANDS, f"{page.name}: unknown command in `e2-hf {shlex.join(arguments)}`"
            try:
                build_parser(arguments[0]).parse_args(arguments)
            except SystemExit:
                pytest.fail(f"{page.name}: `e2-hf {shlex.join(arguments)}` is not accepted (see the message above)")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_python_example_compiles(page):
    for number, block in enumerate(code_blocks(page, ("python",))):
        compile(block, f"{page.name}, python block {number + 1}", "exec")
