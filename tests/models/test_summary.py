"""Model summary: totals, parameter counts by bit width, deployed bytes and MACs against independent counts."""

import math

import pytest
from torch import nn

from bnncl.layers import BinaryConv2d, BinaryLinear
from bnncl.models import BackboneConfig, build_model, preset_config
from bnncl.models.summary import format_summary, summarize

KEYS = ["params_1bit", "params_32bit", "bytes_deployed", "bytes_fp32", "binary_macs", "float_macs"]


def _small_model(shortcut):
    # 9x9x2 -> stem 9x9x4 -> block1 9x9x4 -> block2 (s2) 5x5x8 -> block3 5x5x8 -> block4 (s2) 3x3x16 -> head 5.
    cfg = BackboneConfig(
        input_shape=(9, 9, 2), num_classes=5, stem_channels=4, stages=((4, 1, 1), (8, 2, 2), (16, 1, 2)),
        shortcut=shortcut
    )
    return build_model(cfg)


@pytest.fixture(params=["duplicate", "binary"])
def small(request):
    model = _small_model(request.param)
    return model, summarize(model)


def _rows(s):
    return {r["name"]: r for r in s["layers"]}


def test_totals_are_sums_of_rows(small):
    _, s = small
    t = s["totals"]
    for k in KEYS:
        assert t[k] == sum(r[k] for r in s["layers"]), k
    assert t["fp32_over_deployed"] == pytest.approx(t["bytes_fp32"] / t["bytes_deployed"])
    assert t["binary_macs"] > 0 and t["float_macs"] > 0


def test_params_1bit_counts_binary_layer_weights(small):
    model, s = small
    binary = [m for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear))]
    assert binary
    assert s["totals"]["params_1bit"] == sum(m.weight.numel() for m in binary)
    # Every learnable parameter is stored once: latent binary weights as 1 bit, everything else as 32 bits,
    # plus one float32 scale per output channel of each binary layer.
    n_params = sum(p.numel() for p in model.parameters())
    scales = sum(m.weight.shape[0] for m in binary)
    assert s["totals"]["params_1bit"] + s["totals"]["params_32bit"] == n_params + scales


def test_bytes_deployed_formula_per_row(small):
    _, s = small
    for r in s["layers"]:
        assert r["bytes_deployed"] == math.ceil(r["params_1bit"] / 8) + 4 * r["params_32bit"], r["name"]
    # A binary row: 1 bit per weight plus a float32 scale per output channel; its fp32 copy is 4 bytes per weight.
    conv = _rows(s)["block2.conv"]
    assert conv["params_1bit"] == 8 * 4 * 3 * 3
    assert conv["params_32bit"] == 8
    assert conv["bytes_deployed"] == math.ceil(8 * 4 * 9 / 8) + 4 * 8
    assert conv["bytes_fp32"] == 4 * 8 * 4 * 9


def test_binary_macs_of_one_conv_by_hand(small):
    _, s = small
    rows = _rows(s)
    # block2.conv: 3x3, stride 2, +1 pad 1, 4 -> 8 channels on a 9x9 input.
    hout = wout = (9 + 2 * 1 - 3) // 2 + 1
    assert hout == 5
    r = rows["block2.conv"]
    assert r["output_shape"] == (8, hout, wout)
    assert r["binary_macs"] == hout * wout * 8 * (3 * 3 * 4)
    assert r["float_macs"] == 0
    # block1.conv keeps 9x9: 9*9*4*(3*3*4).
    assert rows["block1.conv"]["binary_macs"] == 9 * 9 * 4 * (3 * 3 * 4)
    # Float layers: the stem conv (2 -> 4, 3x3 on 9x9) and the head (16 -> 5).
    assert rows["stem.conv"]["float_macs"] == 9 * 9 * 4 * (3 * 3 * 2)
    assert rows["stem.conv"]["binary_macs"] == 0
    assert rows["head"]["float_macs"] == 16 * 5
    assert rows["head"]["params_32bit"] == 16 * 5 and rows["head"]["params_1bit"] == 0


def test_binary_shortcut_conv_counted_as_binary():
    s = summarize(_small_model("binary"))
    rows = _rows(s)
    # block2's shortcut: 2x2 ceil-mode pool 9 -> 5, then a binary 1x1 conv 4 -> 8.
    r = rows["block2.shortcut.conv"]
    assert r["output_shape"] == (8, 5, 5)
    assert r["binary_macs"] == 5 * 5 * 8 * 4
    assert r["params_1bit"] == 8 * 4


def test_macs_split_matches_module_tree(small):
    model, s = small
    n_binary = sum(1 for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear)))
    n_float = sum(
        1 for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, (BinaryConv2d, BinaryLinear))
    )
    assert sum(1 for r in s["layers"] if r["binary_macs"] > 0) == n_binary
    assert sum(1 for r in s["layers"] if r["float_macs"] > 0) == n_float == 2


def test_summarize_restores_training_mode():
    model = _small_model("duplicate")
    model.train()
    summarize(model)
    assert model.training
    model.eval()
    summarize(model)
    assert not model.training


def test_fmnist_preset_is_at_least_10x_smaller_than_fp32():
    s = summarize(build_model(preset_config("fmnist", num_classes=10)))
    assert s["totals"]["fp32_over_deployed"] >= 10
    text = format_summary(s)
    assert s["architecture"] in text
    assert "x smaller" in text
