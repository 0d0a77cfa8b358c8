"""Atomic file writes: the new content is written in full, then renamed over the target.

A write that fails or is killed leaves the previous file untouched and no temporary file
behind. On Linux the content goes to an unnamed file (``O_TMPFILE``) in the target's folder
that is given a name only once complete, just before the rename, so even SIGKILL or a power
cut mid-write leaves nothing; elsewhere a named temporary file (starting with '.' and ending
with '.tmp') is removed on any failure the process survives. The new file gets the usual
permissions (0666 less the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file over ``path``.

    ``write`` must open ``tmp_path`` itself and write to it in place (not write elsewhere and
    rename, as safetensors' ``save_file`` does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _unnamed_file(path.parent)
    if fd is not None:
        _write_unnamed(fd, path, write)
        return
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _unnamed_file(folder: Path) -> int | None:
    """An O_TMPFILE descriptor in ``folder``, or None where the OS or file system has none."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not Path("/proc/self/fd").is_dir():
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY, 0o666)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None  # e.g. a file system without O_TMPFILE: use a named temporary file
        raise


def _write_unnamed(fd: int, path: Path, write: Callable[[Path], object]) -> None:
    proc = f"/proc/self/fd/{fd}"
    tmp: Path | None = None
    dir_fd = -1
    try:
        write(Path(proc))
        os.fsync(fd)
        dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        name = f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        # linkat(AT_SYMLINK_FOLLOW) gives the complete file a name; a dst_dir_fd makes Python
        # call linkat rather than link, which would not follow /proc's link to the file.
        os.link(proc, name, dst_dir_fd=dir_fd, follow_symlinks=True)
        tmp = path.parent / name
        os.replace(tmp, path)
        tmp = None
        os.fsync(dir_fd)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if dir_fd >= 0:
            os.close(dir_fd)
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
