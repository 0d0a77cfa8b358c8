"""Run archcomp jobs under an audit hook that records anything a spec must never cause.

Usage: ``python tests/hostile_support/canary.py JOBS.json RESULTS.json``

JOBS.json is a list of ``{"id", "kind": "cli" | "load", "argv" | "path", "cwd"}``. Each job
runs in this one process (the real ``archcomp.cli.main``, or ``archcomp.load`` for weight
files) with stdout and stderr captured; RESULTS.json gets, per job, the exit code, both
streams, whether a Python traceback escaped, and the audit events that fired:

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
result would raise ``exec``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
import types
from pathlib import Path
from typing import Any

MARKER = "ARCHCOMP_CANARY"
CANARY_MODULE = "archcomp_canary"
EVENTS: list[dict[str, str]] = []

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
        if _code_has_marker(args[0]):
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
            elif job["kind"] == "probe":
                code = _probe(job["path"])
            else:
                import archcomp
                from archcomp.base.errors import SpecError, UsageError

                try:
                    archcomp.load(job["path"])
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


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    sys.addaudithook(_hook)
    results = [_run(job) for job in jobs]
    Path(sys.argv[2]).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
