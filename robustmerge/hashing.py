"""Input hashing for the merge record, without importing torch, so the CLI can start it
before the (single-threaded, ≈ 1.5 s) torch import and use the otherwise idle core
(:mod:`robustmerge.taskfolder`, which names the files, imports torch only when tensors are read).
"""
from __future__ import annotations

import hashlib
import mmap
import os
import threading
from concurrent.futures import Future
from pathlib import Path

from .taskfolder import find_projector_file, find_weight_file


def sha256_file(path: Path, window: int = 64 << 20) -> str:
    """SHA-256 of a file, hashed straight from the page cache through read-only mappings of
    ``window`` bytes at a time (no copy into a buffer; at most one window mapped)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for offset in range(0, size, window):
            with mmap.mmap(f.fileno(), min(window, size - offset), access=mmap.ACCESS_READ, offset=offset) as m:
                if hasattr(m, "madvise"):
                    m.madvise(mmap.MADV_SEQUENTIAL)
                h.update(m)
    return h.hexdigest()


def task_files(folders: list[str | Path]) -> list[Path]:
    """The files a merge of these task folders reads (weights, then extras), where present."""
    files = []
    for folder in map(Path, folders):
        files += [f for f in (find_weight_file(folder), find_projector_file(folder)) if f is not None]
    return files


class InputHasher:
    """SHA-256 of files on one background thread, in the given order, started at once.

    :meth:`digest` waits for a file's hash; a file not given at the start is hashed then.
    A file that cannot be read gives its error to whoever asks for its digest.
    """

    def __init__(self, files: list[Path]):
        self._futures: dict[Path, Future] = {Path(f).resolve(): Future() for f in files}
        self._thread = threading.Thread(target=self._run, name="robustmerge-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for path, fut in self._futures.items():
            try:
                fut.set_result(sha256_file(path))
            except BaseException as exc:  # handed to the caller of digest()
                fut.set_exception(exc)

    def digest(self, path: Path) -> str:
        fut = self._futures.get(Path(path).resolve())
        return fut.result() if fut is not None else sha256_file(path)
