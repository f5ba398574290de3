"""Backbone: presets, the latent-replay split, which layers are binary, config validation, input normalization."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from bnncl.core.errors import ConfigError
from bnncl.layers import BinaryBlock, BinaryConv2d, BinaryLinear
from bnncl.models import PRESETS, BackboneConfig, build_model, normalize_tensor, preset_config, preset_for_shape
from fixtures import F32_UNIT


def _small_config(**kw):
    base = dict(input_shape=(9, 9, 2), num_classes=5, stem_channels=4, stages=((4, 1, 1), (8, 2, 2), (16, 1, 2)))
    return BackboneConfig(**{**base, **kw})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_maps_a_batch_to_logits(name):
    torch.manual_seed(20)
    cfg = preset_config(name, num_classes=7)
    model = build_model(cfg)
    h, w, c = cfg.input_shape
    assert tuple(cfg.input_shape) == tuple(PRESETS[name]["input_shape"])
    assert preset_for_shape(cfg.input_shape) == name
    x = torch.randn(2, c, h, w)
    model.train()
    assert model(x).shape == (2, 7)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    # The head width is the last stage's width.
    assert model.feature_dim == cfg.stages[-1][0]


def test_split_rejects_unknown_point():
    model = build_model(_small_config())
    names = list(model.layers)
    assert names == ["stem", "block1", "block2", "block3", "block4", "pool", "head"]
    assert model.split_points == names[1:]
    for bad in ("stem", "nope", "block99"):
        with pytest.raises(ConfigError, match=bad):
            model.split(bad)


@pytest.mark.parametrize("shortcut", ["duplicate", "binary"])
def test_split_composition_is_the_whole_model(shortcut):
    torch.manual_seed(3)
    model = build_model(_small_config(shortcut=shortcut))
    model.train()
    with torch.no_grad():  # non-trivial BN running statistics
        for _ in range(3):
            model(torch.randn(8, 2, 9, 9) * 2 + 0.5)
    model.eval()
    x = torch.randn(4, 2, 9, 9)
    with torch.no_grad():
        whole = model(x)
        for point in model.split_points:
            frozen, trainable = model.split(point)
            names = list(model.layers)
            k = names.index(point)
            assert [n for n, _ in frozen.named_children()] == names[:k]
            assert [n for n, _ in trainable.named_children()] == names[k:]
            assert torch.equal(trainable(frozen(x)), whole), point
            ids = {id(p) for p in model.parameters()}
            assert {id(p) for p in frozen.parameters()} | {id(p) for p in trainable.parameters()} == ids


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_head_is_bias_free_linear_sized_num_classes(name):
    cfg = preset_config(name, num_classes=13)
    head = build_model(cfg).layers["head"]
    assert type(head) is nn.Linear
    assert head.bias is None
    assert head.out_features == 13
    assert head.in_features == cfg.stages[-1][0]


@pytest.mark.parametrize("shortcut", ["duplicate", "binary"])
@pytest.mark.parametrize("name", ["fmnist", "cifar10"])
def test_only_stem_and_head_are_float(name, shortcut):
    cfg = preset_config(name, num_classes=10, shortcut=shortcut)
    model = build_model(cfg)
    float_layers, binary_convs = [], 0
    for mname, m in model.named_modules():
        if isinstance(m, (BinaryConv2d, BinaryLinear)):
            binary_convs += 1
            assert ".block" in f".{mname}" or mname.startswith("layers.block"), mname
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            float_layers.append(mname)
    assert sorted(float_layers) == ["layers.head", "layers.stem.conv"]
    # Every block's conv is binary, and so is every conv inside a block (incl. 'binary' shortcuts).
    blocks = [m for m in model.modules() if isinstance(m, BinaryBlock)]
    assert len(blocks) == sum(n for _, n, _ in cfg.stages)
    for b in blocks:
        assert isinstance(b.conv, BinaryConv2d)
        for sub in b.modules():
            if isinstance(sub, nn.Conv2d):
                assert isinstance(sub, BinaryConv2d)
    n_downsampling = sum(1 for b in blocks if not isinstance(b.shortcut, nn.Identity))
    expected = len(blocks) + (n_downsampling if shortcut == "binary" else 0)
    assert binary_convs == expected


def test_config_dict_round_trip():
    cfg = preset_config("cifar10", num_classes=10, activation="ste", shortcut="binary")
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON types
    back = BackboneConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg
    assert back.to_dict() == d
    assert build_model(back).state_dict().keys() == build_model(cfg).state_dict().keys()
    custom = _small_config(name="tiny", stem_stride=2)
    assert BackboneConfig.from_dict(custom.to_dict()) == custom


def test_config_from_dict_rejects_unknown_key():
    d = _small_config().to_dict()
    d["depth"] = 3
    with pytest.raises(ConfigError, match="depth"):
        BackboneConfig.from_dict(d)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(activation="relu"), "relu"),
        (dict(shortcut="conv"), "conv"),
        (dict(num_classes=1), "num_classes"),
        (dict(num_classes=0), "num_classes"),
        (dict(input_shape=(28, 28)), "input_shape"),
        (dict(input_shape=(28, 0, 1)), "input_shape"),
        (dict(stages=()), "stages"),
        (dict(stages=((32, 0, 2),)), "stages"),
        (dict(stages=((32, 2),)), "stages"),
    ],
)
def test_invalid_config_raises_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        _small_config(**kw)


def test_unknown_preset_and_shape_raise_config_error():
    with pytest.raises(ConfigError, match="imagenet"):
        preset_config("imagenet", num_classes=10)
    with pytest.raises(ConfigError):
        preset_for_shape((30, 30, 3))
    with pytest.raises(ConfigError, match="activation"):
        preset_config("fmnist", num_classes=10, activation="bogus")


def test_normalize_maps_uint8_range_and_layout():
    rng = np.random.default_rng(23)
    imgs = rng.integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    imgs[0, 0, 0] = [0, 255, 0]
    out = normalize_tensor(torch.from_numpy(imgs.copy()))
    assert out.dtype == torch.float32
    assert out.shape == (2, 3, 5, 4)
    expected = imgs.astype(np.float64).transpose(0, 3, 1, 2) / 127.5 - 1.0
    # float32: the division (u relative to x / 127.5 <= 2) and the subtraction (u relative to the result <= 1)
    assert np.abs(out.numpy() - expected).max() <= 3 * F32_UNIT
    assert out[0, :, 0, 0].tolist() == [-1.0, 1.0, -1.0]
    assert out.min() >= -1.0 and out.max() <= 1.0
    extremes = normalize_tensor(torch.tensor([[[[0], [255]]]], dtype=torch.uint8))
    assert extremes.shape == (1, 1, 1, 2)
    assert extremes.flatten().tolist() == [-1.0, 1.0]


def test_binary_boundary_makes_the_split_tensor_exactly_binary():
    torch.manual_seed(5)
    cfg = _small_config(binary_boundary="block3")
    model = build_model(cfg).eval()
    assert list(model.layers)[:5] == ["stem", "block1", "block2", "binarize", "block3"]
    assert model.layers["block3"].binary_input and not model.layers["block2"].binary_input
    frozen, trainable = model.split("block3")
    x = torch.randn(6, 2, 9, 9)
    with torch.no_grad():
        z = frozen(x)
        assert set(z.unique().tolist()) <= {-1.0, 1.0}
        assert torch.equal(trainable(z), model(x))
    assert BackboneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("bad", ["block1", "block9", "head", "stem"])
def test_binary_boundary_must_name_a_later_block(bad):
    with pytest.raises(ConfigError, match="binary_boundary must name a block after the first"):
        _small_config(binary_boundary=bad)
