"""`evaluate` metric modules shipped with the package; load them by path (offline):

evaluate.load(e2_hf.metrics.metric_path("retrieval_recall"))
"""

from pathlib import Path


def metric_path(name: str = "retrieval_recall") -> str:
    path = Path(__file__).resolve().parent / name
    if not (path / f"{name}.py").is_file():
        raise ValueError(f"no metric module {name!r} in {path.parent}")
    return str(path)
