"""The command line as people meet it: colour, completion, '-', --quiet, progress on a
terminal, "did you mean", and every exit status the README documents."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from archcomp.cli import main
from archcomp.cli.main import EXIT_CODES

ROOT = Path(__file__).resolve().parent.parent
MLP = ROOT / "specs" / "mlp.yaml"
BIN = Path(sys.executable).parent
BAD = "archcomp: 1\nname: m\ninputs: {x: [B, 4]}\nnodes:\n  - {id: a, op: linaer}\noutputs: a\n"
SGR = re.compile(r"\x1b\[([0-9;]*)m")


def run(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "archcomp", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        **kw,
    )


def colours(text: str) -> set[int]:
    """The colour codes (30-37, 90-97, 38;...) among the SGR escapes in ``text``."""
    out = set()
    for params in SGR.findall(text):
        for p in params.split(";"):
            if p and (30 <= int(p) <= 38 or 90 <= int(p) <= 97):
                out.add(int(p))
    return out


def test_diagnostics_are_coloured_when_forced_and_plain_otherwise(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD)
    forced = run(["check", str(spec)], {"FORCE_COLOR": "1"})
    assert forced.returncode == 1
    assert 31 in colours(forced.stderr)  # "error:" and the caret in red
    assert 36 in colours(forced.stderr)  # "hint:" in cyan
    plain = SGR.sub("", forced.stderr)
    assert "bad.yaml:5:17: error: node 'a': unknown op 'linaer'" in plain
    piped = run(["check", str(spec)])  # stderr is a pipe: no escapes at all
    assert piped.stderr == plain and "\x1b" not in piped.stderr
    no_color = run(["check", str(spec)], {"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert colours(no_color.stderr) == set() and SGR.sub("", no_color.stderr) == plain


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_call_archcomp_back(shell: str) -> None:
    out = run(["completion", shell])
    assert out.returncode == 0
    assert "_ARGCOMPLETE" in out.stdout and "archcomp" in out.stdout
    exe = {"bash": "bash", "zsh": "zsh"}.get(shell)
    if exe and subprocess.run(["which", exe], capture_output=True).returncode == 0:
        check = subprocess.run([exe, "-n"], input=out.stdout, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_bash_completes_commands_and_flags() -> None:
    script = run(["completion", "bash"]).stdout
    probe = (
        f"{script}\n"
        'complete_line() { COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$1";'
        " COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _python_argcomplete archcomp;"
        ' echo "${COMPREPLY[*]}"; }\n'
        'complete_line "archcomp su"\ncomplete_line "archcomp draw --dir"\n'
        'complete_line "archcomp completion f"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT)
    replies = [line.strip() for line in done.stdout.split("\n")[:3]]
    assert replies == ["summary", "--direction", "fish"], done.stderr


def test_fish_protocol_lists_subcommands(tmp_path: Path) -> None:
    reply = tmp_path / "reply"
    env = {
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "fish",
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_DFS": "\t",
        "COMP_LINE": "archcomp ",
        "COMP_POINT": "9",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(reply),
    }
    run([], env)
    names = {line.split("\t")[0] for line in reply.read_text().splitlines()}
    assert {"check", "summary", "build", "draw", "completion"} <= names


def test_dash_reads_the_spec_from_stdin() -> None:
    text = MLP.read_text()
    check = run(["check", "-"], input=text)
    assert check.returncode == 0 and check.stdout.startswith("-: ok: mlp: 3 nodes")
    summary = run(["summary", "-", "--json"], input=text)
    assert json.loads(summary.stdout)["parameters"] == 67  # stdout holds the JSON only
    bad = run(["check", "-"], input=BAD)
    assert bad.returncode == 1 and "<stdin>:5:17: error:" in bad.stderr


def test_draw_to_stdout_writes_the_diagram_and_no_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "archcomp", "draw", "-", "-o", "-"],
        input=MLP.read_bytes(),
        capture_output=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"<?xml") and b"<svg" in done.stdout
    assert list(tmp_path.iterdir()) == []  # no file named '-', no diagrams/


def test_draw_to_stdout_without_graphviz_writes_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "archcomp", "draw", str(MLP), "-o", "-"],
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "PATH": str(tmp_path)},  # no dot on PATH
        check=False,
    )
    assert done.returncode == 4 and done.stdout == b""
    assert b"not installed" in done.stderr and list(tmp_path.iterdir()) == []


def test_layout_timeout_keeps_the_dot_and_fits_its_hint(tmp_path: Path) -> None:
    slow = tmp_path / "bin" / "dot"  # a dot that never finishes
    slow.parent.mkdir()
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    env = {"PATH": f"{slow.parent}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "t.svg"
    plain = run(["draw", str(MLP), "-o", str(out), "--timeout", "0.3"], env)
    assert plain.returncode == 4 and not out.exists()
    assert (tmp_path / "t.dot").read_text().startswith("digraph")
    assert "time limit of 0.3 s" in plain.stderr and "raise --timeout" in plain.stderr
    assert "open fewer blocks" not in plain.stderr  # nothing was opened
    assert f"dot -Tsvg {tmp_path / 't.dot'}" in plain.stderr
    spec = str(ROOT / "specs" / "transformer.yaml")
    opened = run(["draw", spec, "-o", str(out), "--timeout", "0.3", "--depth", "2"], env)
    assert opened.returncode == 4 and "open fewer blocks" in opened.stderr


def test_missing_or_unreadable_spec_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(["summary", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"archcomp summary: error: spec file '{tmp_path / 'nope.yaml'}' does not exist\n"
    assert main(["check", str(MLP), str(tmp_path)]) == 2  # the others are still checked
    captured = capsys.readouterr()
    assert "mlp: 3 nodes" in captured.out and "is not a regular file" in captured.err
    assert ":1:1" not in captured.err


def test_quiet_prints_errors_only(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    assert main(["build", str(MLP), "-o", str(out), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "") and out.exists()
    assert main(["--quiet", "check", str(MLP)]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["-q", "build", str(MLP), "-o", str(out)]) == 2  # exists: the error still shows
    assert "pass --force" in capsys.readouterr().err


def test_did_you_mean_for_commands_and_flags(capsys) -> None:
    assert main(["chek", str(MLP)]) == 2
    assert "unknown command 'chek'; did you mean 'check'?" in capsys.readouterr().err
    assert main(["summary", str(MLP), "--jsn"]) == 2
    assert "did you mean '--json'?" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'; see archcomp --help" in capsys.readouterr().err


def _pty_run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run archcomp with stderr on a pseudo-terminal (stdout a pipe)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "archcomp", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
        cwd=ROOT,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.stdout.close()
    code = proc.wait()
    return code, out, re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", b"".join(chunks).decode())


def test_build_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    env = {"ARCHCOMP_PROGRESS_DELAY": "0"}
    code, stdout, tty = _pty_run(["build", str(MLP), "-o", str(out)], env)
    assert code == 0 and f"wrote {out}" in stdout
    for step in ("allocating and initialising weights", "hashing weights", "writing m.safetens"):
        assert step in tty, step
    assert "100%" in tty
    code, _, tty = _pty_run(["build", str(MLP), "-o", str(out), "--force", "--quiet"], env)
    assert code == 0 and tty.strip() == ""  # --quiet: nothing, even on a terminal
    piped = run(["build", str(MLP), "-o", str(out), "--force"], env)
    assert piped.returncode == 0 and piped.stderr == ""  # not a terminal: nothing


def test_readme_documents_every_exit_status() -> None:
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"\| exit status \| meaning \|\n\| --- \| --- \|\n((?:\|.*\|\n)+)", readme)
    assert table is not None, "README.md has no exit status table"
    codes = [
        int(re.match(r"\| `?(\d+)`? \|", line).group(1)) for line in table.group(1).splitlines()
    ]  # type: ignore[union-attr]
    assert codes == sorted(EXIT_CODES)


def test_each_exit_status_happens(tmp_path: Path, monkeypatch, capsys) -> None:
    from archcomp.cli import common

    assert main(["check", str(MLP)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["check", str(bad)]) == 1
    assert main(["summary"]) == 2
    env = {"PATH": str(tmp_path)}  # no Graphviz
    assert run(["draw", str(MLP), "-o", str(tmp_path / "m.svg")], env).returncode == 4

    def broken(args: object) -> int:
        raise RuntimeError("boom")

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    _, configure, help = common.COMMANDS["ops"]
    monkeypatch.setitem(common.COMMANDS, "ops", (broken, configure, help))
    assert main(["ops"]) == 3
    assert "internal error: RuntimeError: boom" in capsys.readouterr().err
    monkeypatch.setitem(common.COMMANDS, "ops", (interrupted, configure, help))
    assert main(["ops"]) == 130
    code = subprocess.run(
        [
            "bash",
            "-c",
            f"{sys.executable} -m archcomp schema | head -c1 >/dev/null; echo ${{PIPESTATUS[0]}}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert code.stdout.strip() == "141"


def test_a_flag_of_other_commands_names_them(capsys) -> None:
    """draw has no --force: the hint names the commands that have it, not '--force' itself."""
    assert main(["draw", str(MLP), "--force"]) == 2
    err = capsys.readouterr().err
    assert "--force is an option of build, convert, export, import, not of draw" in err, err
    assert main(["--force"]) == 2
    assert "--force is an option of build, convert, export, import, given after the command" in (
        capsys.readouterr().err
    )
    assert main(["draw", str(MLP), "--fromat", "svg"]) == 2  # misspelt: among draw's own flags
    assert "did you mean '--format'?" in capsys.readouterr().err
