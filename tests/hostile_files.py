"""Files that run code when they are loaded the unsafe way: the payloads of the security tests.

Each one writes a marker file when it is executed; a safe reader must never let it appear.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class MarkerOnSetstate(nn.Module):
    """A TorchScript module whose `__setstate__` (run by `torch.jit.load`) creates `marker`."""

    def __init__(self, marker: str):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3, 2))
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        created = torch.from_file(state[1], True, 4)  # shared=True creates the file
        self.weight = state[0] + 0 * created.sum()
        self.marker = state[1]
        self.training = state[2]


def torchscript_payload(path: Path, marker: Path) -> Path:
    """Writes the archive to `path`; loading it with `torch.jit.load` creates `marker`."""
    torch.jit.save(torch.jit.script(MarkerOnSetstate(str(marker))), str(path))
    return path
