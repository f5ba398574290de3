"""The flags of bnncl learn and bnncl device learn: their defaults and choices are the library's, the old spellings
of renamed options are still accepted, and the config they build. (Runs of learn and report:
tests/simulation/test_experiment.py.)"""

import dataclasses

import pytest

from bnncl.cli import build_parser
from bnncl.cli.common import learn_config
from bnncl.core.affine import GRIDS, ROUNDINGS
from bnncl.core.errors import ConfigError
from bnncl.core.memory import STORAGES, UPDATE_RULES
from bnncl.core.options import MIXES, OLD_SPELLINGS, Q_BIN_UPDATES, RANGES, LearnOptions
from bnncl.data import DATASETS
from bnncl.data.config import STREAM_TYPES
from bnncl.data.scenarios import SHIFTS

LEARN = ["learn"]
DEVICE_LEARN = ["device", "learn", "m.bnn"]


def _actions(argv) -> dict:
    """The options of the (sub-)command ``argv`` names, by dest."""
    parser = build_parser()
    for name in argv:
        if name.endswith(".bnn"):
            break
        parser = next(a for a in parser._actions if a.dest in ("command", "device_command")).choices[name]
    return {a.dest: a for a in parser._actions}


@pytest.mark.parametrize("argv", [LEARN, DEVICE_LEARN], ids=["learn", "device learn"])
def test_old_spellings_are_accepted(argv):
    new = ["--q-f", "8", "--q-b", "16", "--q-bin", "4", "--q-bin-update", "plain"]
    old = ["--qf", "8", "--qb", "16", "--qbin", "4", "--qbin-update", "plain"]
    assert {opt.lstrip("-").replace("-", "_") for opt in old[::2]} == set(OLD_SPELLINGS)
    parser = build_parser()
    cfg = learn_config(parser.parse_args(argv + old))
    assert cfg == learn_config(parser.parse_args(argv + new))
    assert cfg["learn"] == {"q_f": 8, "q_b": 16, "q_bin": 4, "q_bin_update": "plain"}
    LearnOptions(**cfg["learn"])  # and LearnOptions takes them


@pytest.mark.parametrize("argv", [LEARN, DEVICE_LEARN], ids=["learn", "device learn"])
def test_choices_and_defaults_are_the_librarys(argv):
    actions = _actions(argv)
    expected = {"dataset": DATASETS, "stream": STREAM_TYPES, "shift": SHIFTS, "replay_storage": STORAGES,
                "replay_update": UPDATE_RULES, "replay_mix": MIXES, "q_rounding": ROUNDINGS,
                "q_bin_update": Q_BIN_UPDATES}
    if argv == LEARN:
        expected.update(q_ranges=RANGES, q_grid=GRIDS)
    for dest, choices in expected.items():
        assert tuple(actions[dest].choices) == tuple(choices), dest
    for field in dataclasses.fields(LearnOptions):  # every [learn] flag: no default of its own, LearnOptions' in --help
        if field.name in actions and field.default is not None:  # (lr_layer's None is said in words)
            action = actions[field.name]
            assert action.default is None, field.name
            assert f"default {field.default}" in action.help or f"default: {field.default}" in action.help, field.name


def test_flags_over_a_config(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('strategies = ["cwr"]\nseed = 3\n[stream]\ntype = "nc"\nn_experiences = 2\n[learn]\nepochs = 2\n'
                    'qf = 8\n')
    args = build_parser().parse_args(["learn", "--config", str(toml), "--experiences", "5", "--q-b", "16",
                                      "--strategy", "ar1", "joint", "--pretrain-epochs", "1"])
    assert learn_config(args) == {"strategies": ["ar1", "joint"], "seed": 3,
                                  "stream": {"type": "nc", "n_experiences": 5}, "pretrain": {"epochs": 1},
                                  "learn": {"epochs": 2, "q_f": 8, "q_b": 16}}
    args = build_parser().parse_args(["learn", "--scenario", "ni"])
    with pytest.raises(ConfigError, match="--scenario applies to --stream core50 only"):
        learn_config(args)
