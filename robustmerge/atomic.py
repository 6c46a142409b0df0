"""Atomic writes (no torch needed): a file or a folder appears whole or not at all.

Folders (:func:`atomic_folder`) are written under an exclusive *claim* of the output: a lock
file ``.<name>.lock`` beside it, created with ``O_EXCL`` and holding the owner's pid and host.
A second run on the same output while the first is working stops at once with an
:class:`~robustmerge.errors.OutputError` (exit status 2) instead of silently replacing the
first one's result; whether ``out`` may be replaced is decided again under the claim, at the
final swap, and a new ``out`` is put in place with ``renameat2(RENAME_NOREPLACE)`` where the
kernel has it. Temporary folders are named ``.<name>.tmp-<pid>-<hex>``: a run killed with
SIGKILL leaves one (and its lock) behind, and the next run on the same output removes every
such leftover whose owner process is gone.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OutputError

#: OSError numbers a user can fix (full disk, read-only or forbidden folder)
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST}


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename.
    The file gets the mode a plain ``open()`` would give (0666 less the umask), not
    mkstemp's 0600, so colleagues can read results on a shared machine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def default_file_mode() -> int:
    """0666 less the process's umask: the mode ``open(path, 'w')`` creates files with."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_folder(out: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` under an exclusive claim of ``out``; on
    success it takes ``out``'s place in one rename, on failure it is removed and ``out`` is
    untouched. ``replace=False``: an ``out`` that is a non-empty folder at the final swap
    (another run finished there meanwhile) is an OutputError, never replaced."""
    out = Path(out)
    refuse_symlink(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = claim(out)
    except OSError as exc:
        raise _output_error(out, exc) from exc
    tmp = None
    try:
        clean_stale(out)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        yield tmp
        refuse_symlink(out)
        if not replace and out.is_dir() and any(out.iterdir()):
            raise OutputError(f"{out}: another run wrote this folder while this one was merging; nothing was "
                              "replaced: pass --overwrite to replace it, or choose another --out")
        replace_folder(tmp, out)
    except OSError as exc:
        if exc.errno in _USER_ERRNOS and _about_output(exc, out, tmp):
            raise _output_error(out, exc) from exc
        raise
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        release(lock)


def refuse_symlink(out: Path) -> None:
    """OutputError for an output path that is a symbolic link (replacing it by a folder
    would leave the link's target as it was and the user's link gone)."""
    if os.path.islink(out):
        raise OutputError(f"{out}: is a symbolic link (to {os.readlink(out)}); give the real folder path as --out")


def _about_output(exc: OSError, out: Path, tmp: Path | None) -> bool:
    """Whether an OSError concerns the output side (no file named: a failed write; or the
    output, its lock or its temporary folder), not an input read inside the ``with`` body."""
    if exc.filename is None:
        return True
    name = os.fsdecode(exc.filename)
    return name in (str(out), str(lock_path(out))) or (tmp is not None and name.startswith(str(tmp)))


def _output_error(out: Path, exc: OSError) -> OutputError:
    return OutputError(f"{out}: cannot write the output ({exc.strerror or exc}: {exc.filename or out.parent}); "
                       "choose a writable folder with free space as --out")


# ---------------------------------------------------------------- the claim


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def claim(out: Path) -> Path:
    """Create ``out``'s lock file exclusively and return it. A lock of a process that is
    gone (same host) is stale and taken over; a live one is an OutputError."""
    lock = lock_path(out)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is None or _alive(*owner):
                pid = f"pid {owner[0]} on {owner[1]}" if owner else "a run that is starting"
                raise OutputError(f"{out}: another run ({pid}) is writing this output now; wait for it to "
                                  f"finish or choose another --out (if no such run exists, remove {lock})") from None
            _unlink(lock)  # its owner was killed: take the claim over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}\n")
        return lock
    raise OutputError(f"{out}: another run keeps claiming this output; choose another --out")


def release(lock: Path) -> None:
    """Remove our lock file (only if it is still ours)."""
    owner = _lock_owner(lock)
    if owner is not None and owner[0] == os.getpid():
        _unlink(lock)


def _lock_owner(lock: Path) -> tuple[int, str] | None:
    try:
        pid, host = lock.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def _alive(pid: int, host: str = "") -> bool:
    """Whether process ``pid`` exists (a process on another host is assumed alive)."""
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


_LEFTOVER = re.compile(r"\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$|\.old-(?P<oldpid>\d+)-[0-9a-f]{8}$")


def clean_stale(out: Path) -> list[Path]:
    """Remove the temporary and set-aside folders of ``out`` left by runs that were killed
    (their pid, in the name, is no live process); returns what was removed."""
    removed = []
    prefix = f".{out.name}."
    for entry in out.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        m = _LEFTOVER.fullmatch(entry.name[len(prefix) - 1:])
        if m and not _alive(int(m["pid"] or m["oldpid"])) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# ---------------------------------------------------------------- the swap


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, failing (FileExistsError) when ``dst`` exists:
    ``renameat2(RENAME_NOREPLACE)`` on Linux; elsewhere a check then ``os.rename`` (the
    claim already excludes our own concurrent runs)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # not supported here: fall back
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)


def replace_folder(src: Path, out: Path) -> None:
    """Put the finished folder ``src`` at ``out`` (same file system): an existing ``out`` is
    renamed aside first (to ``.<name>.old-<pid>-<hex>``) and removed only after ``src`` took
    its place; a new ``out`` is created with a no-replace rename."""
    old = None
    if os.path.lexists(out):
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        _rename_noreplace(src, out)
    except BaseException:
        if old is not None:  # put the earlier output back
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
