"""``archcomp completion bash|zsh|fish``: the shell code that completes archcomp's commands,
flags and file names (argcomplete; the shell calls ``archcomp`` back to ask).

Install: ``eval "$(archcomp completion bash)"`` in ~/.bashrc, the same with ``zsh`` in
~/.zshrc, or ``archcomp completion fish | source`` in ~/.config/fish/config.fish.
"""

from __future__ import annotations

import argparse

from archcomp.cli.common import command

SHELLS = ("bash", "zsh", "fish")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=SHELLS, help="the shell to print completion code for")


def cmd_completion(args: argparse.Namespace) -> int:
    from argcomplete import shellcode

    print(shellcode(["archcomp"], shell=args.shell), end="")
    return 0


cmd_completion.configure = _configure  # type: ignore[attr-defined]
command("completion", "print shell completion code (bash, zsh or fish)")(cmd_completion)
