"""The fuzz worker: mutated copies of small index folders, each opened and searched the way
`e2-hf search` does, under a memory limit. Run by tests/test_index_fuzz.py in its own process:

    python -m tests.index_fuzz WORK_DIR CASES SEED MEMORY_BYTES

Writes WORK_DIR/outcomes.json: how many cases gave a result and how many an `EmbeddingIndexError`,
and every other exception with its case. Before each case it prints the case to stderr, so a
process that FAISS aborts names the file that killed it.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import sys
from pathlib import Path

from e2_hf.search.engine import SearchSettings
from e2_hf.search.index import EmbeddingIndexError

from .index_files import open_and_search, random_index

BASE_SETTINGS = {
    "flat": SearchSettings(index_type="flat"),
    "hnsw": SearchSettings(index_type="hnsw", hnsw_neighbours=8),
    "ivfpq": SearchSettings(index_type="ivfpq", ivf_lists=16, pq_subvectors=4),
}
JSON_VALUES = [0, -1, 1, 7, 2**31, 2**62, 10**30, 1.5, float("nan"), "", "x", "../index.json", "/etc/passwd",
               "faiss-00001-0.index", None, True, [], {}, [1, 2], {"file": "x"}]  # fmt: skip


def mutate_bytes(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    kind = rng.choice(["flip", "flip-header", "truncate", "append", "overwrite", "zero-range"])
    if kind.startswith("flip") and data:
        span = min(len(data), 256) if kind == "flip-header" else len(data)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(span)] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data) + 1) :]
    elif kind == "append":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif data:
        start = rng.randrange(len(data))
        filler = 0 if kind == "zero-range" else 0xFF
        data[start : start + rng.randint(1, 64)] = bytes([filler]) * len(data[start : start + 64])
    path.write_bytes(bytes(data))
    return f"{path.name}: {kind}"


def _leaves(value, trail=()):
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(child, (*trail, key))
    elif isinstance(value, list):
        for position, child in enumerate(value):
            yield from _leaves(child, (*trail, position))
    yield trail


def mutate_json(path: Path, rng: random.Random) -> str:
    """One field of index.json (or of its nested records) replaced by a hostile value, or removed."""
    document = json.loads(path.read_text())
    trail = rng.choice([trail for trail in _leaves(document) if trail])
    parent = document
    for step in trail[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[trail[-1]]
        change = "removed"
    else:
        parent[trail[-1]] = rng.choice(JSON_VALUES)
        change = repr(parent[trail[-1]])
    path.write_text(json.dumps(document))
    return f"{path.name}: {'.'.join(map(str, trail))} = {change}"


def mutate(folder: Path, rng: random.Random) -> str:
    path = rng.choice(sorted(item for item in folder.iterdir() if item.is_file() and item.name != ".lock"))
    if path.name == "index.json" and rng.random() < 0.7:
        try:
            return mutate_json(path, rng)
        except ValueError:  # an earlier mutation left no JSON to walk
            pass
    return mutate_bytes(path, rng)


def main(work: Path, cases: int, seed: int, memory_bytes: int) -> None:
    bases = {name: random_index(work / f"base-{name}", settings=settings).folder
             for name, settings in BASE_SETTINGS.items()}  # fmt: skip
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    rng = random.Random(seed)
    outcomes = {"result": 0, "EmbeddingIndexError": 0, "other": []}
    for case in range(cases):
        base = rng.choice(sorted(bases))
        folder = work / "case"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(bases[base], folder)
        mutations = [mutate(folder, rng) for _ in range(rng.choice([1, 1, 2]))]
        description = f"case {case} ({base}): {'; '.join(mutations)}"
        print(description, file=sys.stderr, flush=True)
        try:
            open_and_search(folder)
            outcomes["result"] += 1
        except EmbeddingIndexError:
            outcomes["EmbeddingIndexError"] += 1
        except BaseException as error:  # noqa: BLE001 (what the test reports)
            outcomes["other"].append(f"{description}: {type(error).__name__}: {error}")
    (work / "outcomes.json").write_text(json.dumps(outcomes, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
