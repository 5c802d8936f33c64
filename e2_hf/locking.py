"""Exclusive locks on a file, held by the operating system (`flock`, or `msvcrt` on Windows): a
killed holder never leaves one held. Writers of an index folder and of a captioner folder use them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockHeldError(RuntimeError):
    """Another process holds the lock and the caller asked not to wait."""


@contextmanager
def exclusive_lock(path: str | Path, wait: bool = True, waiting_message: str | None = None) -> Iterator[None]:
    """Holds an exclusive lock on `path` (created if missing) inside the block. When another process
    holds it: waits (printing `waiting_message` once), or with `wait=False` raises `LockHeldError`."""
    with open(path, "a+b") as handle:
        if not _try_lock(handle):
            if not wait:
                raise LockHeldError(f"{path} is locked by another process")
            if waiting_message:
                print(waiting_message, file=sys.stderr)
            _lock(handle)
        try:
            yield
        finally:
            _unlock(handle)


if os.name == "nt":
    import msvcrt

    def _try_lock(handle) -> bool:
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _lock(handle) -> None:
        while not _try_lock(handle):  # LK_LOCK gives up after 10 s; keep waiting
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)

    def _unlock(handle) -> None:
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(handle) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _lock(handle) -> None:
        fcntl.flock(handle, fcntl.LOCK_EX)

    def _unlock(handle) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)
