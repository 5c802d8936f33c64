"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) for the installed version.

The wheel does not ship them; the source distribution on the package index holds `tests/*.py`.
`load()` downloads that sdist once per version (pip), keeps `tests/*.py` in a cache folder and
imports them as the package `transformers_common_tests`. The sdist leaves out the (empty)
`tests/__init__.py` and the sub-packages three imports of those files point at; `_STAND_INS`
names each and says why it is not needed here.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path

import transformers

PACKAGE = "transformers_common_tests"
CACHE_DIR = Path(
    os.environ.get("E2_HF_TRANSFORMERS_TESTS_CACHE", Path.home() / ".cache" / "e2-hf" / "transformers-tests")
)
DOWNLOAD_TIMEOUT_S = 300


class _NotShipped(Mapping):
    """Stands in for data the sdist leaves out; any use fails the test that reads it."""

    def __init__(self, name: str):
        self.name = name

    def _fail(self, *args):
        raise RuntimeError(f"{self.name} is not in transformers' source distribution; this check cannot run here")

    __getitem__ = __iter__ = __len__ = _fail


class ExportTesterMixin:
    """The torch.export tests live in tests/exporters/, which the sdist does not ship: they are not run."""


class GenerationTesterMixin:
    """E2 does not generate; ModelTesterMixin only checks that a non-generative tester lacks this mixin."""


_STAND_INS = {
    "exporters.test_export": {"ExportTesterMixin": ExportTesterMixin},
    "generation.test_utils": {"GenerationTesterMixin": GenerationTesterMixin},
    # read only by ConfigTester.check_config_arguments_init, which returns early for composite
    # configs such as E2CLIPConfig
    "utils.test_configuration_utils": {"config_common_kwargs": _NotShipped("config_common_kwargs")},
}


def _download_tests(version: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as download_dir:
        command = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary", ":all:"]
        command += ["--no-deps", "--quiet", "--disable-pip-version-check", "-d", download_dir]
        result = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
        if result.returncode != 0:
            last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"pip could not download the transformers {version} sdist: {last_line}")
        (archive,) = Path(download_dir).glob("transformers-*.tar.gz")
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        with tarfile.open(archive) as sdist:
            for member in sdist.getmembers():
                path = Path(member.name)
                if member.isfile() and path.parts[1:2] == ("tests",) and len(path.parts) == 3 and path.suffix == ".py":
                    member.name = path.name
                    sdist.extract(member, staging, filter="data")
        if not (staging / "test_modeling_common.py").exists():
            shutil.rmtree(staging)
            raise FileNotFoundError(f"the transformers {version} sdist holds no tests/test_modeling_common.py")
        # the repository's tests/__init__.py is empty and not in the sdist; ConfigTester's module executes it
        (staging / "__init__.py").touch()
        staging.rename(target)  # atomic: a half-written cache is never used


def tests_dir() -> Path:
    """The cached `tests/` of the installed transformers version (downloaded on first use)."""
    version = transformers.__version__
    target = CACHE_DIR / version
    if not (target / "__init__.py").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _download_tests(version, target)
    return target


def _register_package(source_dir: Path) -> None:
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(source_dir)]
    sys.modules[PACKAGE] = package
    for dotted, names in _STAND_INS.items():
        parent_name = PACKAGE
        for part in dotted.split("."):
            name = f"{parent_name}.{part}"
            module = sys.modules.setdefault(name, types.ModuleType(name))
            module.__path__ = []
            parent_name = name
        vars(module).update(names)


def load() -> tuple[types.ModuleType, types.ModuleType]:
    """(test_modeling_common, test_configuration_common) of the installed transformers version."""
    if PACKAGE not in sys.modules:
        _register_package(tests_dir())
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling, configuration
