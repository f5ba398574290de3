"""Export + device runtime against the oracle: the torch model in eval mode.

Layer by layer (teacher-forced: each device op gets torch's own input to that layer) the real-valued outputs agree
within 1e-4 of the tensor's magnitude and the signs fed to the next binary conv are identical, except at a *tie*: a
value whose distance to its threshold is below float32 rounding (1e-6 of the tensor's magnitude), where two float32
computations of the same value may round to opposite sides. End to end the predictions are identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnncl.checkpoint import save_checkpoint
from bnncl.device import Model
from bnncl.device.bitpack import pack_signs
from bnncl.device.ops import Activation, Block
from bnncl.errors import CheckpointError, ConfigError, DataError
from bnncl.export import export_checkpoint
from bnncl.layers import BinarizeInput, BinaryBlock
from bnncl.models import BackboneConfig, normalize
from fixtures import randomized

TIE = 1e-6
FLOAT = 1e-4


def torch_trace(model, images):
    """Every layer's input and output, and the ±1 tensor each binary conv consumed (NHWC numpy)."""
    nhwc = lambda t: t.permute(0, 2, 3, 1).numpy() if t.dim() == 4 else t.numpy()  # noqa: E731
    trace, hooks = {}, []
    for name, module in model.layers.items():
        hooks.append(module.register_forward_hook(
            lambda m, i, o, name=name: trace.update({f"{name}.in": nhwc(i[0]), name: nhwc(o)})))
        if isinstance(module, BinaryBlock):  # sign(x + shift) happens inside the conv: its input is x + shift
            hooks.append(module.conv.register_forward_hook(
                lambda m, i, o, name=name: trace.update({f"{name}.pre_sign": nhwc(i[0])})))
        if isinstance(module, BinarizeInput):
            hooks.append(module.shift.register_forward_hook(
                lambda m, i, o, name=name: trace.update({f"{name}.pre_sign": nhwc(o)})))
    with torch.inference_mode():
        logits = model(normalize(torch.from_numpy(images))).numpy()
    for h in hooks:
        h.remove()
    return trace, logits


def images_with_ties(trace, layers) -> np.ndarray:
    """Per image: does any value torch binarized in ``layers`` lie within float rounding of zero (its threshold)?"""
    ties = None
    for key, v in trace.items():
        if key.endswith(".pre_sign") and key.split(".")[0] in layers:
            t = (np.abs(v) <= TIE * np.abs(v).max()).reshape(len(v), -1).any(axis=1)
            ties = t if ties is None else ties | t
    return ties


def assert_close(ours, theirs, what):
    err = np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30)
    assert err <= FLOAT, f"{what}: relative error {err:.2e}"


def assert_signs_equal_except_ties(ours, theirs, gap, what):
    """``ours`` and ``theirs`` (±1) may differ only where torch's value is within float rounding of its threshold
    (``gap``, the distance to it, below 1e-6 of the tensor's magnitude)."""
    diff = ours != theirs
    beyond = diff & (gap > TIE * np.abs(gap).max())
    assert not beyond.any(), f"{what}: {int(beyond.sum())} signs differ away from a tie"
    return int(diff.sum())


CONFIGS = {
    "fmnist": dict(input_shape=(28, 28, 1), stem_channels=32, stages=((32, 2, 2), (64, 2, 2), (128, 2, 2)),
                   name="fmnist"),
    "boundary": dict(input_shape=(28, 28, 1), stem_channels=32, stages=((32, 2, 2), (64, 2, 2), (128, 2, 2)),
                     binary_boundary="block5", name="fmnist"),
    # odd widths (not multiples of 64), RGB, a strided stem, the binary 1x1-conv shortcut, odd sizes (9 -> 5 -> 3)
    "odd": dict(input_shape=(9, 9, 3), stem_channels=5, stem_stride=1, stages=((70, 1, 2), (130, 2, 2)),
                shortcut="binary", binary_boundary="block3"),
    "strided-stem": dict(input_shape=(16, 12, 3), stem_channels=33, stem_stride=2, stages=((33, 1, 1), (66, 1, 2))),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    config = BackboneConfig(num_classes=7, **CONFIGS[request.param])
    model = randomized(config, seed=len(request.param))
    d = tmp_path_factory.mktemp(request.param)
    save_checkpoint(d / "model.pt", model)
    export_checkpoint(d / "model.pt", d / "model.bnn")
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(12, *config.input_shape), dtype=np.uint8)
    return model, Model.load(d / "model.bnn"), images


@pytest.mark.parametrize("backend", ["packed", "float"])
def test_every_layer_matches_torch(exported, backend):
    """Teacher-forced: each op runs on torch's input to that layer; its outputs are compared with torch's."""
    from bnncl.device import normalize

    model, device, images = exported
    trace, _ = torch_trace(model, images)
    ops = device.ops
    for k, op in enumerate(ops):
        x = normalize(images) if k == 0 else trace[f"{op.name}.in"]
        bits = None
        if isinstance(op, Block):  # the ±1 tensor torch's conv consumed, in this backend's form
            signs = np.where(trace[f"{op.name}.pre_sign"] < 0, -1.0, 1.0).astype(np.float32)
            bits = pack_signs(signs) if backend == "packed" else signs
        out = op.run(Activation(x.shape[-1], x, bits), backend)
        if out.real is not None:
            assert_close(out.real, trace[op.name], op.name)
        if op.out_threshold is not None:  # fused: the signs the next op consumes
            nxt = ops[k + 1]
            if isinstance(nxt, Block):  # torch: sign(x + shift) inside the next block
                pre = trace[f"{nxt.name}.pre_sign"]
                theirs, gap = np.where(pre < 0, -1.0, 1.0), np.abs(pre)
            else:  # the binarize layer: torch's output is the ±1 tensor itself
                theirs, gap = trace[nxt.name], np.abs(trace[op.name] - op.out_threshold)
            assert_signs_equal_except_ties(out.signs(), theirs, gap, f"{op.name} -> {nxt.name}")


@pytest.mark.parametrize("backend", ["packed", "float"])
def test_predictions_and_latent_match_torch(exported, backend):
    model, device, images = exported
    trace, logits = torch_trace(model, images)
    ours = device.logits(images, backend)
    assert_close(ours, logits, "logits")
    np.testing.assert_array_equal(device.predict(images, backend), logits.argmax(1))
    latent = device.latent(images, backend)
    frozen = device.frozen_ops[-1].name
    if model.config.binary_boundary and frozen == "binarize":
        assert latent.real is None  # the LR activation is binary: nothing but bits crosses the split
        np.testing.assert_array_equal(latent.signs(), trace["binarize"])
        if backend == "packed":
            assert latent.bits.dtype == np.uint64
    else:
        assert_close(latent.real, trace[frozen], "latent")


def test_export_records_the_split_and_is_small(tmp_path):
    config = BackboneConfig(num_classes=10, **CONFIGS["fmnist"])
    model = randomized(config, 0)
    save_checkpoint(tmp_path / "model.pt", model)
    meta = export_checkpoint(tmp_path / "model.pt", tmp_path / "model.bnn", lr_layer="block6")
    assert meta["lr_layer"] == "block6" and meta["frozen"][-1] == "block5" and meta["trainable"][0] == "block6"
    device = Model.load(tmp_path / "model.bnn")
    assert [op.name for op in device.trainable_ops] == ["block6", "pool", "head"]
    fp32 = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    size = (tmp_path / "model.bnn").stat().st_size
    assert fp32 / size >= 10, f"model file {size} B vs fp32 weights {fp32} B"
    # The trainable part keeps its unfolded per-channel vectors for on-device learning; the frozen part does not.
    from bnncl.device.modelfile import read_model_file

    _, arrays = read_model_file(tmp_path / "model.bnn")
    assert "train.block6.bn.running_var" in arrays and "train.block6.conv.alpha" in arrays
    assert not any(k.startswith("train.block5.") for k in arrays)


def test_export_bad_input(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        export_checkpoint(tmp_path / "bad.pt", tmp_path / "m.bnn")
    model = randomized(BackboneConfig(num_classes=10, **CONFIGS["fmnist"]), 0)
    save_checkpoint(tmp_path / "model.pt", model)
    with pytest.raises(ConfigError, match="block99"):
        export_checkpoint(tmp_path / "model.pt", tmp_path / "m.bnn", lr_layer="block99")
    assert not (tmp_path / "m.bnn").exists()


def test_device_refuses_bad_images(exported):
    _, device, images = exported
    with pytest.raises(DataError, match="uint8"):
        device.predict(images.astype(np.float32))
    with pytest.raises(DataError, match="do not fit"):
        device.predict(images[:, :-1])


FMNIST = "/usr/share/datasets/fashion-mnist"


def test_whole_fashion_mnist_test_set_same_predictions(tmp_path):
    """A briefly pretrained default backbone (binary boundary at block5, so the LR layer is 1-bit), exported: the
    device runtime predicts exactly what torch predicts on all 10,000 test images, on both backends. Its LR-layer
    bits equal torch's signs on every image where torch itself binarized no value at a tie; on an image with a tie
    the two float32 computations may round it to opposite sides (and the flip travels on), which
    test_every_layer_matches_torch checks layer by layer."""
    from bnncl.data import load_dataset
    from bnncl.learning.pretrain import PretrainOptions, pretrain

    opts = PretrainOptions(epochs=1, batch_size=64, max_steps_per_epoch=60, progress=False, binary_boundary="block5",
                           out=str(tmp_path / "model.pt"))
    model, _ = pretrain(opts)
    export_checkpoint(tmp_path / "model.pt", tmp_path / "model.bnn")
    device = Model.load(tmp_path / "model.bnn")
    test = load_dataset("fashion-mnist", FMNIST, "test")
    model.eval()
    with torch.inference_mode():
        theirs = np.concatenate([model(normalize(torch.from_numpy(test.x[i:i + 1000]))).argmax(1).numpy()
                                 for i in range(0, len(test), 1000)])
    assert (theirs == test.y).mean() > 0.5  # a real, if briefly trained, classifier
    for backend in ("packed", "float"):
        np.testing.assert_array_equal(device.predict(test.x, backend), theirs, err_msg=backend)
    x = test.x[:1000]
    trace, _ = torch_trace(model, x)
    differ = (device.latent(x).signs() != trace["binarize"]).reshape(len(x), -1).any(axis=1)
    ties = images_with_ties(trace, [op.name for op in device.frozen_ops])
    assert not np.any(differ & ~ties), f"LR-layer signs differ on {int((differ & ~ties).sum())} images without a tie"
    assert (~ties).sum() >= len(x) // 2  # most images have no tie, so the check above covers most of them
