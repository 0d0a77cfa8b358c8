"""Writes that fail or are killed: the previous file stays byte-identical and no temporary
file is left in its folder.

- ``build`` and ``draw`` killed with SIGKILL at random moments (for build: while its
  temporary output is being written), several times;
- a full disk: writes that raise ``OSError(ENOSPC)`` part-way (monkeypatched, in-process) and
  a real ``EFBIG`` from ``RLIMIT_FSIZE`` in a subprocess: a clean error, no traceback.
"""

from __future__ import annotations

import errno
import io
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archcomp.cli import main

ROOT = Path(__file__).resolve().parent.parent
# About 100 MB of float32 weights: its write takes long enough to be killed in the middle.
BIG = """archcomp: 1
name: big
inputs: {x: [B, 5000]}
nodes:
  - {id: fc, op: linear, out_features: 5000, repeat: 1}
outputs: fc
"""


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _writing_into(pid: int, folder: Path) -> bool:
    """Whether process ``pid`` has a file open for its output in ``folder``: an unnamed
    O_TMPFILE shows in /proc as ``folder/#inode (deleted)``; elsewhere a named temporary."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        targets = [os.readlink(p) for p in fds.iterdir()]
    except OSError:
        return len(_listing(folder)) > 1
    return any(t.startswith(str(folder) + "/") for t in targets)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "archcomp", *args]


@pytest.fixture
def previous(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A spec, and an existing artifact of it that later writes must not damage."""
    spec = tmp_path / "big.yaml"
    spec.write_text(BIG)
    out = tmp_path / "out" / "big.safetensors"
    out.parent.mkdir()
    out.write_bytes(b"previous artifact " * 1000)
    return spec, out, out.read_bytes()


def test_build_killed_while_writing(previous: tuple[Path, Path, bytes]) -> None:
    spec, out, before = previous
    rng = random.Random(0)
    caught_mid_write = 0
    for _ in range(3):
        proc = subprocess.Popen(
            _cli("build", str(spec), "-o", str(out), "--force"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 300  # a guard: a build reaches its write in seconds
        while time.monotonic() < deadline and proc.poll() is None:
            if _writing_into(proc.pid, out.parent):  # the output is being written
                time.sleep(rng.uniform(0, 0.05))
                caught_mid_write += 1
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert out.read_bytes() == before or proc.returncode == 0
        if out.read_bytes() == before:
            assert _listing(out.parent) == ["big.safetensors"], "temporary file left behind"
    assert caught_mid_write, "never caught the build while it was writing"


def test_build_and_draw_killed_at_random_moments(previous: tuple[Path, Path, bytes]) -> None:
    spec, out, before = previous
    svg = out.parent / "big.svg"
    svg.write_text("<svg>previous</svg>")
    rng = random.Random(1)
    for args, target, old in (
        (["build", str(spec), "-o", str(out), "--force"], out, before),
        (["draw", str(spec), "-o", str(svg)], svg, b"<svg>previous</svg>"),
    ):
        for _ in range(2):
            proc = subprocess.Popen(
                _cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(0.2, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            data = target.read_bytes()
            if proc.returncode == 0:  # finished first: the new file is complete
                assert data != old
            # Killed: the old file, or the new one complete (renamed in before the kill landed).
            assert data == old or _complete(target, data)
            assert not [n for n in _listing(out.parent) if n.startswith(".")], _listing(out.parent)
            target.write_bytes(old)


def _complete(target: Path, data: bytes) -> bool:
    if target.suffix == ".svg":
        return data.startswith(b"<?xml") and data.rstrip().endswith(b"</svg>")
    from safetensors.torch import load

    return len(load(data)) > 0  # a truncated file fails to parse


def _full_disk_after(limit: int):  # type: ignore[no-untyped-def]
    """A write that puts ``limit`` bytes on disk, then fails as a full disk does."""
    real_open = open

    class Full:
        def __init__(self, f):  # type: ignore[no-untyped-def]
            self.f, self.n = f, 0

        def write(self, data):  # type: ignore[no-untyped-def]
            room = max(0, limit - self.n)
            self.f.write(
                bytes(data)[:room]
                if isinstance(data, (bytes, bytearray, memoryview))
                else data[:room]
            )
            self.n += min(room, len(data))
            if len(data) > room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return len(data)

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self.f, name)

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            return self.f.__exit__(*exc)

    def fake_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        f = real_open(file, mode, *args, **kwargs)
        return Full(f) if any(c in mode for c in "wax") else f

    return fake_open


def _no_temp(folder: Path, keep: list[str]) -> None:
    assert _listing(folder) == sorted(keep)


def test_full_disk_during_build_keeps_previous_artifact(
    previous: tuple[Path, Path, bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec, out, before = previous
    spec.write_text(BIG.replace("5000", "50"))
    import builtins

    monkeypatch.setattr(builtins, "open", _full_disk_after(100))
    monkeypatch.setattr(io, "open", _full_disk_after(100))
    code = main(["build", str(spec), "-o", str(out), "--force"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code != 0
    assert "No space left on device" in err and "Traceback" not in err, err
    assert "internal error" not in err, err
    assert out.read_bytes() == before
    _no_temp(out.parent, ["big.safetensors"])


def test_full_disk_during_draw_keeps_previous_diagram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    svg = tmp_path / "mlp.svg"
    svg.write_text("<svg>previous</svg>")
    import builtins

    monkeypatch.setattr(builtins, "open", _full_disk_after(10))
    monkeypatch.setattr(io, "open", _full_disk_after(10))
    code = main(["draw", str(ROOT / "specs" / "mlp.yaml"), "-o", str(svg)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code != 0
    assert "No space left on device" in err and "Traceback" not in err, err
    assert "internal error" not in err, err
    assert svg.read_text() == "<svg>previous</svg>"
    _no_temp(tmp_path, ["mlp.svg"])


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_file_size_limit_in_a_real_process(previous: tuple[Path, Path, bytes]) -> None:
    spec, out, before = previous
    spec.write_text(BIG.replace("5000", "500"))  # 1 MB of weights, over the 200 kB limit
    r = subprocess.run(
        _cli("build", str(spec), "-o", str(out), "--force"),
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        check=False,
    )
    assert r.returncode != 0
    assert "File too large" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "internal error" not in r.stderr, r.stderr
    assert out.read_bytes() == before
    _no_temp(out.parent, ["big.safetensors"])
