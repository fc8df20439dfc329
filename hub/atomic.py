"""Atomic writes of folders (adapter folders) and files (registries): a reader sees the old one or the new one.

An atomic write stages beside its target (`.<name>.tmp-<pid>-XXXX`) and holds an advisory lock on what it
stages, so the next write to the same target can tell what a killed writer left (its process is gone, or
nothing has held it for minutes) from a live writer's work, and removes only the former.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import ModuleType

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so a dead writer's staging cannot be told from a live one's
    fcntl = None

STALE_AFTER_S = 300  # unlocked this long, a staging item is an orphan even if a process of its pid runs (pid reused)
AT_FDCWD, RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_permissions(folder: Path) -> None:
    """mkdtemp makes a private folder; give the finished one the usual umask-based modes."""
    umask = _umask()
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


@contextmanager
def _staged(target: Path, kind: str, folder: bool) -> Iterator[Path]:
    """A fresh temp folder or file beside `target`, named with this pid and locked while the block runs (the
    kernel drops the lock when the process dies, however it dies); the block decides what becomes of it."""
    prefix = f".{target.name}.{kind}-{os.getpid()}-"
    if folder:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(handle)
        path = Path(name)
    if fcntl is None:
        yield path
        return
    handle = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(handle)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _orphaned(path: Path, pid: str | None) -> bool:
    """Whether no live writer can still be creating `path`: its process is gone or it is minutes old."""
    if pid is not None and not _alive(int(pid)):
        return True
    try:
        return time.time() - path.lstat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return False


def clean_stale(target: Path) -> None:
    """Remove the staging items killed atomic writes to `target` left beside it; never a live writer's (it holds
    the lock). If a kill fell between moving the old folder aside and the new one in, the old one goes back."""
    if fcntl is None:
        return
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-(?:(\d+)-)?[A-Za-z0-9_]+")
    for path in sorted(target.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match and _orphaned(path, match.group(2)):
            _remove_orphan(path, target, retired=match.group(1) == "old")


def _remove_orphan(path: Path, target: Path, retired: bool) -> None:
    """Delete `path` unless a live writer holds its lock (first putting back an old folder a kill left aside)."""
    assert fcntl is not None  # only clean_stale calls this, once it found fcntl
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return  # another cleaner was first
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if retired and (path / "folder").is_dir() and not target.exists():
            os.replace(path / "folder", target)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except BlockingIOError:
        pass  # a live writer holds it
    finally:
        os.close(handle)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """Linux's renameat2 from the C library, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step; False where the OS or the file system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_in(staging: Path, target: Path) -> None:
    """Put the finished `staging` at `target`: one rename, one exchange, or where the OS has no exchange
    two renames (target aside, staging in; clean_stale undoes a kill between them)."""
    if not target.exists():
        os.replace(staging, target)
    elif _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # the old folder now
    else:
        with _staged(target, "old", folder=True) as retired:
            os.replace(target, retired / "folder")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)


def discard_folder(target: Path) -> None:
    """Remove `target` by one rename into a staging folder, then delete that: a kill never leaves it half removed."""
    with _staged(target, "tmp", folder=True) as trash:
        os.replace(target, trash / target.name)
        shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _atomic(target: Path, folder: bool, finish: Callable[[Path, Path], None]) -> Iterator[Path]:
    """The one life of an atomic write: clean what killed writes to `target` left, stage beside it, let the
    body fill the staging item, `finish(staging, target)` puts it in place; on any failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    with _staged(target, "tmp", folder=folder) as staging:
        try:
            yield staging
            finish(staging, target)
        except BaseException:
            if folder:
                shutil.rmtree(staging, ignore_errors=True)
            else:
                staging.unlink(missing_ok=True)
            raise


def _finish_folder(staging: Path, target: Path) -> None:
    _fsync_tree(staging)
    _default_permissions(staging)
    _swap_in(staging, target)


def _finish_file(staging: Path, target: Path) -> None:
    with open(staging, "rb") as written:
        os.fsync(written.fileno())
    staging.chmod(0o666 & ~_umask())  # mkstemp makes a private file; the result gets the usual mode
    os.replace(staging, target)


def atomic_folder(target: Path) -> AbstractContextManager[Path]:
    """Yield a fresh temp folder beside `target`; on success it replaces `target` in one step.

    If the body raises, the temp folder is removed and `target` is left exactly as it was; what killed
    writes to `target` left beside it is removed first (`clean_stale`).
    """
    return _atomic(target, folder=True, finish=_finish_folder)


def atomic_file(target: Path) -> AbstractContextManager[Path]:
    """Yield a temp file path beside `target`; when the body succeeds the file is synced and replaces
    `target` in one rename, when it raises the temp file is removed and `target` is left as it was.
    What killed writes to `target` left beside it is removed first (`clean_stale`)."""
    return _atomic(target, folder=False, finish=_finish_file)
