"""The parser as a whole: every command's --help, the entry point, the one-line usage errors, and what building the
parser imports. The commands themselves: test_<module>.py beside this file, and tests/simulation/test_experiment.py
(learn, report)."""

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bnncl.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    """Every command and sub-command of the parser, as argv prefixes."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += _commands(sub, (*prefix, name))
    return found


def test_every_command_is_there():
    assert set(_commands(build_parser())) == {
        ("summary",), ("pretrain",), ("evaluate",), ("learn",), ("report",), ("export",), ("device",),
        ("device", "predict"), ("device", "learn"), ("device", "compare"), ("device", "info")}


@pytest.mark.parametrize("sub", [(), *_commands(build_parser())], ids=lambda sub: " ".join(sub) or "bnncl")
def test_help_of_every_command(sub):
    proc = subprocess.run([sys.executable, "-m", "bnncl.cli", *sub, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith(" ".join(("usage: bnncl", *sub))), proc.stderr
    assert proc.stderr == ""


def test_entry_point_is_main():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    module, _, name = pyproject["project"]["scripts"]["bnncl"].partition(":")
    assert (module, name) == ("bnncl.cli", "main")


def test_usage_errors_are_one_line(capsys):
    for argv, needle in ((["nonsense"], "invalid choice"), (["device"], "required"),
                         (["learn", "--epochs", "four"], "invalid int value"),
                         (["device", "learn", "m.bnn", "--strategy", "naive"], "invalid choice: 'naive'")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("bnncl: error: ") and needle in err, err


def test_building_the_parser_imports_neither_torch_nor_numba():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from bnncl.cli import build_parser; build_parser()\n"
            "heavy = ('numba', 'matplotlib', 'bnncl.device.kernels', 'bnncl.device.learner', 'bnncl.simulation')\n"
            "assert not [m for m in sys.modules if m.startswith(heavy)], sorted(sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
