"""Running Graphviz's ``dot`` under a time and a memory limit, and stamping outputs with their
DOT's hash.

The memory limit is ``RLIMIT_AS`` set in the child before ``dot`` starts: past it dot's
allocations fail and it exits (or crashes) instead of taking the machine's memory.

The stamp (a comment in SVG, a ``tEXt`` chunk in PNG) lets a test tell whether a checked-in
diagram is out of date with its spec without depending on the installed Graphviz version.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import graphviz

FORMATS = ("svg", "png", "pdf", "dot")
DEFAULT_TIMEOUT = 15.0
DEFAULT_MEMORY = 2 << 30  # address space dot may use, in bytes
MAX_TIMEOUT = 86_400.0  # a day: longer is a mistake (and 1e308 overflows the clock)
TICK = 0.1  # seconds between two looks at a running dot
PNG_DPI = "144"
STAMP_KEY = "archcomp-dot-sha256"

INSTALL_HINT = (
    "Graphviz's 'dot' program is not installed, so only the DOT source was written.\n"
    "  install it with:  sudo apt-get install graphviz   (Debian/Ubuntu)\n"
    "                    brew install graphviz           (macOS)\n"
    "                    conda install -c conda-forge graphviz\n"
    "  or see https://graphviz.org/download/ ; then run the command again,\n"
    "  or render the DOT yourself:  dot -Tsvg FILE.dot -o FILE.svg"
)


NOT_INSTALLED = (
    "Graphviz's 'dot' program is not installed, so the diagram cannot be rendered.\n"
    "  install it with:  sudo apt-get install graphviz   (Debian/Ubuntu)\n"
    "                    brew install graphviz           (macOS)\n"
    "                    conda install -c conda-forge graphviz\n"
    "  or see https://graphviz.org/download/ ; the DOT text is in the diagram's .source"
)


class RenderError(Exception):
    """``dot`` is missing, failed or ran past its time limit."""

    def __init__(self, message: str, *, missing: bool = False, timed_out: bool = False):
        super().__init__(message)
        self.missing = missing
        self.timed_out = timed_out


class Diagram(graphviz.Digraph):
    """What :func:`archcomp.draw` returns: a ``graphviz.Digraph`` (shown as SVG in notebooks)
    whose rendering raises archcomp's :class:`RenderError` with the install hint when
    Graphviz is missing, instead of graphviz's ``ExecutableNotFound`` traceback."""

    def pipe(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().pipe(*args, **kwargs)
        except graphviz.ExecutableNotFound:
            raise RenderError(NOT_INSTALLED, missing=True) from None

    def render(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().render(*args, **kwargs)
        except graphviz.ExecutableNotFound:
            raise RenderError(NOT_INSTALLED, missing=True) from None

    def _repr_mimebundle_(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """As graphviz shows it in a notebook, with the SVG scaled down to the cell's width
        (its viewBox keeps the proportions) instead of cut off at the right."""
        bundle: dict[str, Any] = super()._repr_mimebundle_(*args, **kwargs)
        svg = bundle.get("image/svg+xml")
        if isinstance(svg, str):
            bundle["image/svg+xml"] = fit_width(svg)
        return bundle


def fit_width(svg: str) -> str:
    """``svg`` whose root element shrinks to its container's width (never grows)."""
    return svg.replace("<svg ", '<svg style="max-width:100%;height:auto" ', 1)


def dot_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def find_dot() -> str | None:
    return shutil.which("dot")


def check_limits(timeout: float, memory: int) -> None:
    """Refuse limits dot cannot run under: not a finite number of seconds, not positive."""
    if not (0 < timeout <= MAX_TIMEOUT):  # also refuses nan
        raise ValueError(
            f"the time limit must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
            f"found {timeout:g}"
        )
    if memory < 64 << 20:
        raise ValueError(f"the memory limit must be at least 64 MiB, found {memory:,} bytes")


def _address_space(limit: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def run_dot(
    source: str, fmt: str, *, timeout: float = DEFAULT_TIMEOUT, memory: int = DEFAULT_MEMORY
) -> bytes:
    """Lay out and render DOT source; the result's bytes, stamped with the source's hash.

    ``dot`` runs for at most ``timeout`` seconds in at most ``memory`` bytes of address
    space; past either it is stopped and :class:`RenderError` says which."""
    check_limits(timeout, memory)
    if fmt == "dot":
        return source.encode()
    exe = find_dot()
    if exe is None:
        raise RenderError(INSTALL_HINT, missing=True)
    cmd = [exe, f"-T{fmt}"]
    if fmt == "png":
        cmd.append(f"-Gdpi={PNG_DPI}")
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_address_space(memory),
        )
    except OSError as exc:
        raise RenderError(f"could not run dot: {exc}") from None
    with proc:  # closes the pipes however it ends
        stdout, stderr = _communicate(proc, source.encode(), timeout)
    if proc.returncode != 0:
        err = stderr.decode(errors="replace").strip()[-2000:]
        why = f": {err}" if err else ""
        raise RenderError(
            f"dot failed (exit {proc.returncode}){why}; if the graph is large it may have run "
            f"out of its memory limit of {memory / 2**30:.1f} GiB: draw it collapsed (drop "
            "--expand/--depth) or raise --max-memory"
        )
    return stamp(stdout, fmt, dot_hash(source))


def _communicate(proc: subprocess.Popen[bytes], data: bytes, timeout: float) -> tuple[bytes, bytes]:
    """Feed ``dot`` and wait for it under ``timeout`` seconds, showing a spinner meanwhile."""
    from archcomp.base.progress import task

    deadline = time.monotonic() + timeout
    sent: bytes | None = data
    with task("laying out the diagram with Graphviz", None) as tick:
        while True:
            try:
                out, err = proc.communicate(sent, timeout=min(TICK, timeout))
                return out, err
            except subprocess.TimeoutExpired:
                sent = None  # communicate keeps what it has not written yet
                tick(0)
                if time.monotonic() >= deadline:
                    proc.kill()
                    proc.communicate()
                    raise RenderError(
                        f"dot ran past its time limit of {timeout:g} s", timed_out=True
                    ) from None


def stamp(data: bytes, fmt: str, digest: str) -> bytes:
    if fmt == "svg":
        text = data.decode()
        head, sep, rest = text.partition("\n")
        mark = f"<!-- {STAMP_KEY}: {digest} -->"
        if head.startswith("<?xml"):
            return (head + sep + mark + "\n" + rest).encode()
        return (mark + "\n" + text).encode()
    if fmt == "png" and data[:8] == b"\x89PNG\r\n\x1a\n":
        payload = STAMP_KEY.encode() + b"\x00" + digest.encode()
        chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload
        chunk += struct.pack(">I", zlib.crc32(b"tEXt" + payload) & 0xFFFFFFFF)
        ihdr_end = 8 + 8 + struct.unpack(">I", data[8:12])[0] + 4
        return data[:ihdr_end] + chunk + data[ihdr_end:]
    return data


def read_stamp(path: Path) -> str | None:
    """The DOT hash a rendered SVG or PNG was stamped with, or None."""
    data = path.read_bytes()
    if path.suffix == ".svg":
        key = f"<!-- {STAMP_KEY}: ".encode()
        i = data.find(key)
        return data[i + len(key) : i + len(key) + 64].decode() if i >= 0 else None
    if path.suffix == ".png":
        pos = 8
        while pos + 8 <= len(data):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            kind = data[pos + 4 : pos + 8]
            body = data[pos + 8 : pos + 8 + length]
            if kind == b"tEXt" and body.startswith(STAMP_KEY.encode() + b"\x00"):
                return body[len(STAMP_KEY) + 1 :].decode()
            pos += 12 + length
    return None
