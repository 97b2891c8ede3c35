"""Base for every console script: subcommands from functions, help from docstrings.

A command module declares functions decorated with ``@app.command(...)``; the first
paragraph of the docstring becomes the subcommand's one-line help, the whole docstring
its description. ``UserError`` raised anywhere becomes ``prog: error: message`` and
exit status 1, as do argparse's own usage errors.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from qrgate.errors import QrgateError, UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2; user errors here are exit 1
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


Arg = tuple[Sequence[str], dict[str, Any]]


def arg(*names: str, **kwargs: Any) -> Arg:
    """Describe one argparse argument: ``arg("--json", action="store_true", help=...)``."""
    return (names, kwargs)


class App:
    """A console script made of subcommands."""

    def __init__(self, prog: str, doc: str):
        self.prog = prog
        self.doc = doc
        self._commands: list[tuple[str, Callable[..., int | None], list[Arg]]] = []

    def command(self, name: str, *args: Arg):
        def register(func: Callable[..., int | None]):
            self._commands.append((name, func, list(args)))
            return func

        return register

    def parser(self) -> argparse.ArgumentParser:
        parser = _Parser(
            prog=self.prog,
            description=self.doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument(
            "-v", "--verbose", action="count", default=0, help="more log output (repeatable)"
        )
        sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
        for name, func, args in self._commands:
            doc = inspect.cleandoc(func.__doc__ or "")
            summary = doc.split("\n\n", 1)[0].replace("\n", " ")
            p = sub.add_parser(
                name,
                help=summary,
                description=doc,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            for names, kwargs in args:
                p.add_argument(*names, **kwargs)
            p.set_defaults(_func=func)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        parser = self.parser()
        ns = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.WARNING - 10 * min(ns.verbose + 1, 2),
            # journald stamps every line itself (JOURNAL_STREAM is set under systemd).
            format=("" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s ") + "%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        func = ns._func
        params = inspect.signature(func).parameters
        kwargs = {k: v for k, v in vars(ns).items() if k in params}
        try:
            return int(func(**kwargs) or 0)
        except UserError as exc:
            sub = f"{self.prog} {ns.command}"
            print(f"{sub}: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        except QrgateError as exc:
            logging.getLogger(self.prog).error("%s", exc)
            return 2
