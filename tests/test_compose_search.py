"""Text-guided image retrieval: caption, rewrite, search (`e2-hf compose-search`)."""

import json
import os
import subprocess
import sys

import pytest

from e2_hf.captioning.metrics import named_values
from e2_hf.search.compose import RewriterError, TagRewriter, load_rewriter, rewrite

from .conftest import run_e2_hf

VOCABULARY = {"brand": ["Aurel", "Aurel Studio", "Kato"], "season": ["FW2016", "SS2017"],
              "composition": ["100% cotton", "100% silk"]}  # fmt: skip


@pytest.mark.parametrize(
    "caption, modification, expected",
    [
        ("100% cotton. Aurel. SS2017. Navy dress", "in FW2016", "100% cotton. Aurel. FW2016. Navy dress"),
        ("100% cotton. Aurel. SS2017. Navy dress", "by Aurel Studio", "100% cotton. Aurel Studio. SS2017. Navy dress"),
        ("100% cotton. Aurel Studio. Navy dress", "by kato", "100% cotton. Kato. Navy dress"),
        ("Navy dress in cotton", "made of 100% silk", "Navy dress in cotton. 100% silk"),  # no value to replace
        ("Navy dress. FW2016", "in FW2016", "Navy dress. FW2016"),  # already there
        ("Navy dress.", "with longer sleeves", "Navy dress. with longer sleeves"),  # no known value: appended
    ],
)
def test_the_tag_rewriter_replaces_the_value_of_the_entity_the_change_names(caption, modification, expected):
    assert TagRewriter(VOCABULARY)(caption, modification) == expected


def test_a_failing_or_empty_rewriter_is_reported_with_its_query():
    def broken(caption, modification):
        raise TimeoutError("the LLM did not answer")

    with pytest.raises(RewriterError, match=r"failed on query 3 \(caption 'a dress', modification 'in red'\): "
                       "TimeoutError: the LLM did not answer"):  # fmt: skip
        rewrite(broken, "a dress", "in red", "query 3")
    with pytest.raises(RewriterError, match="returned '' for query 1"):
        rewrite(lambda caption, modification: "", "a dress", "in red", "query 1")
    with pytest.raises(RewriterError, match="MODULE:FUNCTION"):
        load_rewriter("no_colon")
    with pytest.raises(RewriterError, match="cannot load the rewriter no_such_module_e2:f"):
        load_rewriter("no_such_module_e2:f")


@pytest.fixture(scope="module")
def index_dir(e2_model_dir, catalog, tmp_path_factory):
    folder = tmp_path_factory.mktemp("compose") / "index"
    completed = run_e2_hf("index", "--model", str(e2_model_dir), "--data", f"jsonl:{catalog / 'catalog.jsonl'}",
                          "--output", str(folder))  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return folder


def test_compose_search_captions_rewrites_and_searches(e2_model_dir, decap_folder, index_dir, catalog, tmp_path):
    product = json.loads((catalog / "catalog.jsonl").read_text().splitlines()[0])
    other_season = next(json.loads(line)["season"] for line in (catalog / "catalog.jsonl").read_text().splitlines()
                        if json.loads(line)["season"] != product["season"])  # fmt: skip
    output = tmp_path / "results.json"
    completed = run_e2_hf("compose-search", "--model", str(e2_model_dir), "--captioner", str(decap_folder),
                          "--index", str(index_dir), "--image", str(catalog / product["images"][0]),
                          "--modify", f"in {other_season}", "--entity", "season", "--top-k", "3",
                          "--output", str(output))  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    seasons = {json.loads(line)["season"] for line in (catalog / "catalog.jsonl").read_text().splitlines()}
    assert named_values(result["rewritten"], sorted(seasons)) == {other_season}  # the caption's season replaced
    assert len(result["hits"]) == 3 and f"searched: {result['rewritten']}" in completed.stdout


def test_a_users_rewriter_is_run_and_its_failure_named(e2_model_dir, decap_folder, index_dir, catalog, tmp_path):
    (tmp_path / "my_rewriter.py").write_text(
        "def shout(caption, modification):\n    return caption.upper() + ' ' + modification\n"
        "def fail(caption, modification):\n    raise RuntimeError('no LLM here')\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    image = str(catalog / "images" / "000000_0.png")

    def compose(rewriter: str, output: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "e2_hf.cli", "compose-search", "--model", str(e2_model_dir), "--captioner",
                   str(decap_folder), "--index", str(index_dir), "--image", image, "--modify", "in red",
                   "--rewriter", rewriter, "--output", str(tmp_path / output)]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)

    completed = compose("my_rewriter:shout", "results.html")
    assert completed.returncode == 0, completed.stderr[-3000:]
    searched = next(line for line in completed.stdout.splitlines() if line.startswith("searched: "))
    assert searched.endswith(" in red") and searched[len("searched: ") :].split(" in red")[0].isupper()
    assert (tmp_path / "results.html").is_file()
    failed = compose("my_rewriter:fail", "failed.html")
    assert failed.returncode != 0
    assert f"the rewriter failed on --image {image}" in failed.stderr and "RuntimeError: no LLM here" in failed.stderr
