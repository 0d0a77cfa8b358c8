"""Run archcomp jobs under an audit hook that records anything a spec must never cause.

Usage: ``python tests/hostile_support/canary.py JOBS.json RESULTS.json``

JOBS.json is a list of ``{"id", "kind": "cli" | "load" | "emit", "argv" | "path", "cwd"}``.
Each job runs in a child forked from this process (which has imported archcomp and torch
once): the real ``archcomp.cli.main``, ``archcomp.load`` for weight files, or for ``emit``
``archcomp build --emit-python`` and then an import of the generated file and an instance of
its model class. stdout and stderr are captured. The child's resources are measured by
``wait4`` (its own and those of the children it waited for, such as ``dot``): CPU seconds,
wall seconds and peak resident memory; a child past the wall-clock limit is killed. Each runs
under ``RLIMIT_AS`` (this process's address space plus 8 GiB) so that a runaway case cannot
take the machine. RESULTS.json gets, per job, the exit code, both streams, whether a Python
traceback escaped, the measurements, and the audit events that fired:

- ``shell``: ``os.system``, ``os.exec*``, ``os.posix_spawn``, ``os.spawn*``, ``os.fork``,
  ``pty.spawn``, and ``subprocess.Popen`` of anything but Graphviz's ``dot``;
- ``network``: ``socket.connect``, ``socket.getaddrinfo``, ``socket.bind``,
  ``urllib.Request``, ``http.client.connect``;
- ``import``: a module whose name contains ``archcomp_canary`` (the payload hostile specs name);
- ``exec``: ``exec``/``eval`` of a code object that carries the marker ``ARCHCOMP_CANARY``
  (every payload in the corpus carries it, so spec text turned into code is caught; torch.fx
  legitimately ``exec``s archcomp's own generated forward, which never carries the marker);
- ``unpickle``: ``pickle.find_class`` (archcomp never unpickles);
- ``file``: an ``open`` of a path containing the marker (files a spec tries to read or write).

``compile`` events with the marker are not failures: ``ast.parse`` of a ``${...}`` expression
raises one (archcomp parses expressions and evaluates them with its own walker); executing the
result would raise ``exec``. An ``emit`` job executes the generated module on purpose: that one
code object is exempt (its docstrings may quote the marker as literals); what its import does
(an import of ``archcomp_canary``, an open of a marked path, a shell) is still recorded.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import resource
import select
import signal
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

MARKER = "ARCHCOMP_CANARY"
CANARY_MODULE = "archcomp_canary"
EVENTS: list[dict[str, str]] = []
EXEMPT: set[int] = set()  # ids of code objects a job executes on purpose
WALL_LIMIT = 300.0  # seconds before a job is killed (it then fails its bounds)
# The modules archcomp's commands import lazily (for a fast start): imported in the runner
# before it forks, so that each case does not pay for them again (about 0.15 s of CPU each,
# most of a case's cost). Imported before the audit hook, like torch: they are archcomp's own.
WARM = (
    "archcomp.api",
    "archcomp.ops",
    "archcomp.frontend.build",
    "archcomp.passes.pipeline",
    "archcomp.backends.torch.build",
    "archcomp.backends.torch.artifact",
    "archcomp.backends.torch.summary",
    "archcomp.backends.graphviz.render",
    "archcomp.cli.console",
    "graphviz",
    "rich",
    "sympy",
    "yaml",
)

_SHELL = {"os.system", "os.posix_spawn", "os.fork", "os.forkpty", "pty.spawn", "os.startfile"}
_NETWORK = {
    "socket.connect",
    "socket.getaddrinfo",
    "socket.bind",
    "socket.sendto",
    "urllib.Request",
    "http.client.connect",
    "ftplib.connect",
    "smtplib.connect",
    "webbrowser.open",
}


def _code_has_marker(code: types.CodeType) -> bool:
    for const in code.co_consts:
        if isinstance(const, str) and MARKER in const:
            return True
        if isinstance(const, types.CodeType) and _code_has_marker(const):
            return True
    return any(MARKER in n or CANARY_MODULE in n for n in code.co_names)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    kind = None
    if event in _SHELL or event.startswith(("os.exec", "os.spawn")):
        kind = "shell"
    elif event == "subprocess.Popen":
        argv = args[1] if len(args) > 1 else None
        exe = args[0] or (argv[0] if isinstance(argv, (list, tuple)) and argv else argv)
        if os.path.basename(os.fsdecode(exe or "")) != "dot":
            kind = "shell"
    elif event in _NETWORK:
        kind = "network"
    elif event == "import" and args and CANARY_MODULE in str(args[0]):
        kind = "import"
    elif event == "exec" and args and isinstance(args[0], types.CodeType):
        if id(args[0]) not in EXEMPT and _code_has_marker(args[0]):
            kind = "exec"
    elif event == "pickle.find_class":
        kind = "unpickle"
    elif event == "open" and args and MARKER in str(args[0]):
        kind = "file"
    if kind is not None:
        EVENTS.append({"kind": kind, "event": event, "args": repr(args)[:300]})


def _probe(what: str) -> int:
    """Do one forbidden thing on purpose, so a test can prove the hook sees it."""
    if what == "import":
        __import__(CANARY_MODULE)
    elif what == "eval":
        eval(compile("'" + MARKER + "'", "<spec>", "eval"))
    elif what == "shell":
        os.system("true")
    elif what == "subprocess":
        import subprocess

        subprocess.run(["true"], check=False)
    elif what == "network":
        import socket

        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.connect(("127.0.0.1", 9))  # refused at once; the event fires before
    elif what == "unpickle":
        import pickle

        pickle.loads(pickle.dumps(contextlib.suppress))
    elif what == "file":
        with contextlib.suppress(OSError):
            open(MARKER + "_probe")  # noqa: SIM115
    return 0


def _run(job: dict[str, Any]) -> dict[str, Any]:
    from archcomp.cli import main

    EVENTS.clear()
    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    crashed = False
    old = os.getcwd()
    os.chdir(job.get("cwd") or old)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if job["kind"] == "cli":
                code = main(job["argv"])
            elif job["kind"] == "emit":
                code = main(job["argv"])
                if code == 0:
                    _import_emitted(job["path"])
            elif job["kind"] == "probe":
                code = _probe(job["path"])
            else:
                import archcomp
                from archcomp.base.errors import SpecError, UsageError

                try:
                    archcomp.load(job["path"], max_memory=job.get("max_memory"))
                    code = 0
                except (SpecError, UsageError) as exc:
                    print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
                    code = 1
    except BaseException:  # a crash is a finding: record it, keep going
        crashed = True
        err.write(traceback.format_exc())
    finally:
        os.chdir(old)
    return {
        "id": job["id"],
        "code": code,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "crashed": crashed,
        "traceback": crashed or "Traceback (most recent call last)" in err.getvalue(),
        "events": list(EVENTS),
    }


def _import_emitted(path: str) -> None:
    """Execute a generated file as its module and build its model (the last class)."""
    from torch import nn

    code = compile(Path(path).read_text(), path, "exec")
    EXEMPT.add(id(code))
    namespace: dict[str, Any] = {"__name__": "archcomp_emitted"}
    exec(code, namespace)
    classes = [
        v
        for v in namespace.values()
        if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == "archcomp_emitted"
    ]
    classes[-1]()
    print(f"imported {path}: {classes[-1].__name__}")


def _measured(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in a forked child; its result with CPU, wall and peak memory added."""
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_fd)
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            room = _address_space() + (8 << 30)
            if hard == resource.RLIM_INFINITY or room < hard:
                resource.setrlimit(resource.RLIMIT_AS, (room, hard))
            data = json.dumps(_run(job)).encode()
            with os.fdopen(write_fd, "wb") as f:
                f.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    timed_out = False
    with os.fdopen(read_fd, "rb") as f:
        while True:
            ready, _, _ = select.select(
                [f], [], [], max(0.0, start + WALL_LIMIT - time.monotonic())
            )
            if not ready:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(f.fileno(), 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - start
    try:
        result = json.loads(b"".join(chunks)) if not timed_out else None
    except ValueError:
        result = None
    if result is None:
        result = {
            "id": job["id"],
            "code": None,
            "stdout": "",
            "stderr": f"the job {'ran past ' + str(WALL_LIMIT) + ' s' if timed_out else 'died'}"
            f" (wait status {status})",
            "crashed": True,
            "traceback": False,
            "events": [],
        }
    result.update(
        cpu=usage.ru_utime + usage.ru_stime,
        wall=wall,
        max_rss=usage.ru_maxrss * 1024,  # Linux reports KiB
        timed_out=timed_out,
    )
    return result


def _address_space() -> int:
    """This process's virtual size in bytes (what RLIMIT_AS counts)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    import torch  # noqa: F401 - imported once, before the hook: every child shares it

    import archcomp.backends.torch.codegen
    import archcomp.cli  # noqa: F401

    for name in WARM:  # what check, build and draw import on first use, imported once here
        importlib.import_module(name)
    sys.addaudithook(_hook)
    results = []
    for job in jobs:
        results.append(_measured(job) if job["kind"] != "probe" else _run(job))
    Path(sys.argv[2]).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
