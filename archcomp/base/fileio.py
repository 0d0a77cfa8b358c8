"""Reading untrusted paths safely, and atomic file writes.

:func:`open_regular` opens a file only if it is a regular one, deciding on the open
descriptor (no check-then-open race) and without blocking on a FIFO; :func:`read_regular`
reads one whole under a size limit.

Writes (:func:`write_all`, :func:`write_atomic`): all outputs of a command or none. Each new
content is written in full first, then given its name. A write that fails or is killed
leaves the previous files untouched and no temporary file behind. On Linux the content goes
to an unnamed file (``O_TMPFILE``) in the target's folder that is given a name only once
complete, so even SIGKILL or a power cut mid-write leaves nothing; elsewhere a named
temporary file (starting with '.' and ending with '.tmp') is removed on any failure the
process survives. Without overwriting, the name is given with ``link``, which refuses an
existing target atomically. New files get the usual permissions (0666 less the umask), not
mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """A path that names a directory, FIFO, socket or device rather than a regular file."""


class TooLarge(OSError):
    """A file past a size limit; ``size`` is what it holds (at least), ``limit`` the limit."""

    def __init__(self, size: int, limit: int):
        super().__init__(errno.EFBIG, f"{size:,} bytes; the limit is {limit:,}")
        self.size, self.limit = size, limit


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file.

    Opened non-blocking (a FIFO opens at once instead of waiting for a writer) and checked with
    ``fstat`` on the descriptor. Raises :class:`OSError`: :class:`NotRegularFile` (its
    ``strerror`` names what the path is), ``FileNotFoundError``, ``ELOOP`` for a symlink loop,
    ``ENAMETOOLONG``, and ``EINVAL`` for a path holding a NUL character."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except ValueError:  # embedded NUL
        raise OSError(errno.EINVAL, "the path contains a NUL character", str(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _KINDS if test(mode)), "something else")
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({kind})", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``; :class:`TooLarge` past ``limit`` bytes (known
    from ``fstat`` before reading, and never reading more than ``limit + 1``)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise TooLarge(size, limit)
        data = f.read(limit + 1)
    if len(data) > limit:  # the file grew after fstat
        raise TooLarge(len(data), limit)
    return data


Writer = Callable[[Path], object]  # writes a file's content into the path it is given


class OutputExists(FileExistsError):
    """A target that exists (or appeared while writing) when overwriting was not allowed."""


def write_atomic(path: Path, write: Writer, *, overwrite: bool = True) -> None:
    """Call ``write(tmp_path)``, then give the complete file the name ``path``.

    ``write`` must open ``tmp_path`` itself and write to it in place (not write elsewhere and
    rename, as safetensors' ``save_file`` does). See :func:`write_all`."""
    write_all([(path, write)], overwrite=overwrite)


def write_bytes_atomic(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)


def write_all(outputs: Sequence[tuple[Path, Writer]], *, overwrite: bool) -> None:
    """Write every output, or none: nothing is renamed into place until all are complete.

    1. Missing folders are made (and removed again on failure, if still empty).
    2. Each output is written in full into an unnamed file (or a named temporary) in its
       target's folder and synced.
    3. Only then are they named, in order. Without ``overwrite`` a name is given with
       ``link``, which fails if the target exists, so of two concurrent writers at most one
       wins and the other raises :class:`OutputExists` (no check-then-rename race). With
       ``overwrite`` each is renamed over its target; when there are several, the previous
       files are kept under a hard link until the last rename, so a failure puts them back.

    Any failure (a write error, a full disk, an existing target) leaves every target as it was
    and no temporary file behind."""
    targets = [Path(os.path.abspath(p)) for p, _ in outputs]
    if len(set(targets)) != len(targets):
        raise ValueError("two outputs have the same path")
    made: list[Path] = []
    staged: list[_Staged] = []
    done: list[tuple[_Staged, Path | None]] = []  # committed, with the previous file's backup
    try:
        for target in targets:
            made.extend(_make_folders(target.parent))
        for target, (_, write) in zip(targets, outputs, strict=True):
            staged.append(_stage(target, write))
        keep = overwrite and len(staged) > 1
        for item in staged:
            backup = _backup(item.target) if keep else None
            item.commit(overwrite)
            done.append((item, backup))
    except BaseException:
        for item, backup in reversed(done):
            _undo(item.target, backup)
        for item in staged:
            item.discard()
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    for _, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)
    for item in staged:
        item.discard()


def free_space(target: Path) -> int | None:
    """Free bytes on the file system that ``target`` (existing or not) would be written to:
    that of its nearest existing folder; None when unknown."""
    folder = Path(os.path.abspath(target)).parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; the ones made, outermost first."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    made: list[Path] = []
    try:
        for f in reversed(missing):
            f.mkdir()
            made.append(f)
    except BaseException:
        for f in reversed(made):
            with contextlib.suppress(OSError):
                f.rmdir()
        raise
    return made


class _Staged:
    """One complete output waiting for its name: an unnamed file (its descriptor) or a named
    temporary file, in the target's folder."""

    def __init__(self, target: Path, fd: int | None, tmp: Path | None):
        self.target, self.fd, self.tmp = target, fd, tmp

    def commit(self, overwrite: bool) -> None:
        folder = self.target.parent
        dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            if self.fd is not None:
                proc = f"/proc/self/fd/{self.fd}"
                # linkat(AT_SYMLINK_FOLLOW) names the unnamed file; a dst_dir_fd makes Python
                # call linkat rather than link, which would not follow /proc's link.
                name = self.target.name if not overwrite else _temp_name(self.target)
                try:
                    os.link(proc, name, dst_dir_fd=dir_fd, follow_symlinks=True)
                except FileExistsError:
                    raise OutputExists(errno.EEXIST, "exists", str(self.target)) from None
                if overwrite:
                    try:
                        os.replace(folder / name, self.target)
                    except BaseException:
                        (folder / name).unlink(missing_ok=True)
                        raise
            else:
                assert self.tmp is not None
                if overwrite:
                    os.replace(self.tmp, self.target)
                else:
                    _link_no_replace(self.tmp, self.target)
                self.tmp = None
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def _stage(target: Path, write: Writer) -> _Staged:
    fd = _unnamed_file(target.parent)
    if fd is not None:
        staged = _Staged(target, fd, None)
        try:
            write(Path(f"/proc/self/fd/{fd}"))
            os.fsync(fd)
        except BaseException:
            staged.discard()
            raise
        return staged
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    staged = _Staged(target, None, Path(tmp_name))
    try:
        write(Path(tmp_name))
        os.chmod(tmp_name, 0o666 & ~_umask())
        with open(tmp_name, "rb") as f:
            os.fsync(f.fileno())
    except BaseException:
        staged.discard()
        raise
    return staged


def _link_no_replace(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the name ``target`` unless that exists (atomically, with ``link``)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputExists(errno.EEXIST, "exists", str(target)) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # A file system without hard links: the best left is a check just before the rename.
        if target.exists():
            raise OutputExists(errno.EEXIST, "exists", str(target)) from None
        os.rename(tmp, target)
        return
    tmp.unlink()


def _temp_name(target: Path) -> str:
    return f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"


def _backup(target: Path) -> Path | None:
    """A hard link to the file at ``target`` (so it can be put back), or None."""
    if not target.exists():
        return None
    backup = target.parent / _temp_name(target)
    try:
        os.link(target, backup)
    except OSError:
        return None  # no hard links here: a failure after this rename cannot be undone
    return backup


def _undo(target: Path, backup: Path | None) -> None:
    """Put back what was at ``target`` before a commit."""
    with contextlib.suppress(OSError):
        if backup is not None:
            os.replace(backup, target)
        else:
            target.unlink()


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
