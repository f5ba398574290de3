"""The ``bnncl`` command line: the parser, assembled from one module per command family (summary; train: pretrain,
evaluate; learn: learn, report; device: export, device predict / learn / info), and the one-line errors. Each
command imports torch only when it needs it; the work is the library's."""

from __future__ import annotations

import argparse
import sys

from bnncl.cli import device, learn, summary, train
from bnncl.core.errors import BnnclError

COMMAND_MODULES = (summary, train, learn, device)  # in the order of bnncl --help


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line like every other error (and the same exit status)."""

    def error(self, message):
        command = self.prog.removeprefix("bnncl").strip()
        self.exit(2, f"bnncl: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bnncl", description="On-device continual learning with binary neural networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")  # sub-parsers are _Parsers too
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BnnclError as e:
        print(f"bnncl: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        print(f"bnncl: error: 'bnncl {args.command}' needs torch, which is not installed here (the device runtime "
              "does not); install the training side with: pip install 'bnncl[train]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bnncl: interrupted", file=sys.stderr)
        return 130
