"""One identity per module: the tests run against the installed distribution, and each file of the
source tree is importable under one name."""

import importlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import e2_hf


def _installed_package_dir() -> Path:
    """Where the installed e2-hf distribution keeps `e2_hf`: its own copy, or this checkout's
    folder for an editable install."""
    # pip's record (INSTALLER), not the e2_hf.egg-info a build leaves in a checkout on sys.path
    installed = [found for found in importlib.metadata.distributions(name="e2-hf") if found.read_text("INSTALLER")]
    assert installed, "e2-hf is not installed: pip install . (or pip install -e . to develop)"
    distribution = installed[0]
    direct_url = json.loads(distribution.read_text("direct_url.json") or "{}")
    if direct_url.get("dir_info", {}).get("editable"):
        return Path(unquote(urlparse(direct_url["url"]).path)).resolve() / "e2_hf"
    return Path(distribution.locate_file("e2_hf/__init__.py")).resolve().parent


def test_the_tests_import_the_installed_distribution():
    assert Path(e2_hf.__file__).resolve().parent == _installed_package_dir()


def test_the_hub_code_converters_and_space_are_subpackages_of_e2_hf_only():
    for name in ("modeling", "conversion", "space"):
        module = importlib.import_module(f"e2_hf.{name}")
        assert Path(module.__file__).parent == _installed_package_dir() / name
    for folder in ("tests", "benchmarks", "build"):  # a checkout's other folders are not part of e2_hf
        assert importlib.util.find_spec(f"e2_hf.{folder}") is None, folder
