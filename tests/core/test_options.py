"""The options of a continual-learning run (:mod:`bnncl.core.options`): ``LearnOptions``' validation (each refusal a
ConfigError with its message), the old spellings of renamed options (``renamed_keys``, ``from_dict``), and the
``quantized`` flag.

Oracles: the messages and values stated in the module, the dataclass's own defaults, and a round trip through
``to_dict``."""

import pytest

from bnncl.core.errors import ConfigError
from bnncl.core.options import OLD_SPELLINGS, LearnOptions, renamed_keys
from bnncl.core.typecheck import SIZE_LIMIT

# -- validation -----------------------------------------------------------------------------------------------------

def test_unknown_strategy():
    with pytest.raises(ConfigError, match=r"unknown strategy 'ewc' \(valid: naive, cwr, ar1, joint\)"):
        LearnOptions(strategy="ewc")
    with pytest.raises(ConfigError, match=r"valid: naive, cwr, ar1, joint"):
        LearnOptions.from_dict({"strategy": "replay"})


def test_misspelt_option_key():
    with pytest.raises(ConfigError, match=r"unknown learning option epoch \(valid: strategy, lr_layer, epochs, lr, "):
        LearnOptions.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"replay_sise, stratgy \(valid: .*replay_size"):
        LearnOptions.from_dict({"stratgy": "cwr", "replay_sise": 3})
    assert LearnOptions.from_dict({"epochs": 3}).epochs == 3


@pytest.mark.parametrize("kw,match", [(dict(replay_storage="fp16"), r"replay_storage 'fp16' \(valid: bits, float32\)"),
                                      (dict(replay_update="fifo"), r"replay_update 'fifo' \(valid: ar1, balanced\)"),
                                      (dict(replay_mix="half"), r"replay_mix 'half' \(valid: proportional, fixed\)"),
                                      (dict(epochs=0), "epochs must be at least 1"),
                                      (dict(lr=float("nan")), "learning rate must be a positive number")])
def test_other_bad_options(kw, match):
    with pytest.raises(ConfigError, match=match):
        LearnOptions(**kw)


@pytest.mark.parametrize("kw,match", [
    (dict(q_f=0), r"q_f must be a whole number of bits from 1 to 32, got 0"),
    (dict(q_b=33), r"q_b must be a whole number of bits from 1 to 32, got 33"),
    (dict(q_bin=8.0), r"q_bin must be a whole number \(not 8.0\)"),
    (dict(q_f=16, q_b=8), r"q_b \(backward bits, 8\) must be at least q_f \(forward bits, 16\)"),
    (dict(q_ranges="static"), r"unknown q_ranges 'static' \(valid: dynamic, fixed\)"),
    (dict(q_rounding="up"), r"unknown q_rounding 'up' \(valid: nearest, stochastic\)"),
    (dict(q_grid="log"), r"unknown q_grid 'log' \(valid: affine, integer\)"),
    (dict(q_bin_update="sign"), r"unknown q_bin_update 'sign' \(valid: rebinarize, plain\)"),
    (dict(batch_size=0), "batch_size must be at least 1, got 0"),
    (dict(epochs=SIZE_LIMIT + 1), f"epochs must be between 1 and {SIZE_LIMIT:,}, got {SIZE_LIMIT + 1}"),
    (dict(replay_size=-1), "replay_size and replay_batch must be >= 0"),
    (dict(replay_batch=-3), "replay_size and replay_batch must be >= 0"),
    (dict(replay_size=SIZE_LIMIT + 1), f"replay_size must be between 0 and {SIZE_LIMIT:,}"),
    (dict(lr=0.0), "learning rate must be a positive number, got 0.0"),
    (dict(lr=-0.1), "learning rate must be a positive number"),
    (dict(lr=float("inf")), "learning rate must be a positive number, got inf"),
    (dict(epochs=1.5), r"epochs must be a whole number \(not 1.5\)"),
    (dict(handwritten="yes"), r"handwritten must be true or false \(not 'yes'\)"),
    (dict(lr_layer=3), r"lr_layer must be a string \(not 3\)"),
])
def test_bad_option_values_are_refused_with_their_message(kw, match):
    with pytest.raises(ConfigError, match=match):
        LearnOptions(**kw)


def test_the_limits_themselves_are_accepted():
    """The boundaries of each range: every refusal above is for a value past it, not at it."""
    edge = LearnOptions(q_f=1, q_b=32, q_bin=1, epochs=1, batch_size=SIZE_LIMIT, replay_size=0, replay_batch=0,
                        lr=1e-30)
    assert (edge.q_f, edge.q_b, edge.batch_size, edge.replay_size) == (1, 32, SIZE_LIMIT, 0)
    assert LearnOptions(q_f=16, q_b=16).q_b == 16  # q_b may equal q_f


# -- the old spellings ------------------------------------------------------------------------------------------------

def test_renamed_keys_replaces_every_old_spelling_and_keeps_the_rest():
    given = {"qf": 8, "qb": 16, "qbin": 4, "qbin_update": "plain", "epochs": 2, "q_rounding": "stochastic"}
    before = dict(given)
    assert renamed_keys(given) == {"q_f": 8, "q_b": 16, "q_bin": 4, "q_bin_update": "plain", "epochs": 2,
                                   "q_rounding": "stochastic"}
    assert given == before  # the caller's dict is left as it was
    assert renamed_keys({"q_f": 8, "lr": 0.5}) == {"q_f": 8, "lr": 0.5}
    assert set(OLD_SPELLINGS) == {"qf", "qb", "qbin", "qbin_update"}


def test_from_dict_reads_the_old_spellings():
    old = LearnOptions.from_dict({"qf": 8, "qb": 16, "qbin": 4, "qbin_update": "plain", "strategy": "cwr"})
    assert old == LearnOptions(q_f=8, q_b=16, q_bin=4, q_bin_update="plain", strategy="cwr")
    assert (old.q_f, old.q_b, old.q_bin, old.q_bin_update) == (8, 16, 4, "plain")
    # and the old spellings are checked like the new ones
    with pytest.raises(ConfigError, match=r"q_b \(backward bits, 4\) must be at least q_f"):
        LearnOptions.from_dict({"qf": 8, "qb": 4})


@pytest.mark.parametrize("old,new", sorted(OLD_SPELLINGS.items()))
def test_both_spellings_at_once_are_refused(old, new):
    value = "plain" if new == "q_bin_update" else 8
    for call in (renamed_keys, LearnOptions.from_dict):
        with pytest.raises(ConfigError, match=f"^{old} and {new} are the same option: give one$"):
            call({old: value, new: value})


# -- the rest -------------------------------------------------------------------------------------------------------

def test_quantized_is_any_width_below_32_bits():
    assert not LearnOptions().quantized
    assert LearnOptions(q_f=8, q_b=16).quantized
    assert LearnOptions(q_bin=8).quantized
    assert LearnOptions(q_f=31, q_b=31).quantized


def test_to_dict_from_dict_round_trip():
    opts = LearnOptions(strategy="cwr", lr_layer="head", epochs=3, lr=0.2, q_f=8, q_b=16, q_rounding="stochastic",
                        seed=7)
    d = opts.to_dict()
    assert d["q_f"] == 8 and d["lr_layer"] == "head" and "qf" not in d
    assert LearnOptions.from_dict(d) == opts
