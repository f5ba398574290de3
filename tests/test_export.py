"""Export + device runtime against the oracle: the torch model in eval mode.

Layer by layer (teacher-forced: each device op gets torch's own input to that layer) the real-valued outputs agree
within float32 rounding (twice ``float32_chain_bound`` of the layer's sums and elementwise operations: two float32
computations in different orders) and the signs fed to the next binary conv are identical, except at a *tie*: a value
whose distance to its threshold is within that rounding, where the two computations may round it to opposite sides.
End to end the predictions are identical. (The device model's own checks and refusals: tests/device/test_model.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnncl.checkpoint import save_checkpoint
from bnncl.core.errors import CheckpointError, ConfigError
from bnncl.device import Model
from bnncl.device.bitpack import pack_signs
from bnncl.device.ops import Activation, Block
from bnncl.export import export_checkpoint
from bnncl.layers import BinarizeInput, BinaryBlock
from bnncl.models import BackboneConfig, normalize_tensor
from fixtures import (
    EXPORT_CONFIGS,
    assert_within_float32,
    exported_randomized,
    float32_chain_bound,
    randomized,
    reduction_terms,
)

# the elementwise float operations of a layer besides its sums (folded BN, shortcut, shifts, RPReLU), one rounding
# each, in torch's form or the device's folded one
ELEMENTWISE = 16


def layer_bounds(model, images) -> dict[str, float]:
    """Per layer: how far two float32 computations of its output from the same input may differ, relative to the
    output's magnitude (``float32_chain_bound`` of the layer's sums plus ELEMENTWISE roundings, twice); and under
    ``"<name>.through"``, the same for the whole network up to and including that layer."""
    bounds, total, x = {}, 0, normalize_tensor(torch.from_numpy(images))
    for name, layer in model.layers.items():
        terms = reduction_terms(layer, x) + ELEMENTWISE
        total += terms
        bounds[name] = 2 * float32_chain_bound(terms, 1.0)
        bounds[f"{name}.through"] = 2 * float32_chain_bound(total, 1.0)
        with torch.no_grad():
            x = layer(x)
    return bounds


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
        logits = model(normalize_tensor(torch.from_numpy(images))).numpy()
    for h in hooks:
        h.remove()
    return trace, logits


def assert_close(ours, theirs, bound, what):
    """Within ``bound`` (relative, from :func:`layer_bounds`) of ``theirs``' magnitude."""
    assert_within_float32(ours, theirs, bound * np.abs(theirs).max(), what)


def assert_signs_equal_except_ties(ours, theirs, gap, tie, what):
    """``ours`` and ``theirs`` (±1) may differ only where torch's value is within float32 rounding of its threshold
    (``gap``, the distance to it, at most ``tie``)."""
    diff = ours != theirs
    beyond = diff & (gap > tie)
    assert not beyond.any(), f"{what}: {int(beyond.sum())} signs differ away from a tie"
    return int(diff.sum())


@pytest.fixture(scope="module", params=sorted(EXPORT_CONFIGS))
def exported(request, tmp_path_factory):
    return exported_randomized(request.param, tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("backend", ["packed", "float"])
def test_every_layer_matches_torch(exported, backend):
    """Teacher-forced: each op runs on torch's input to that layer; its outputs are compared with torch's."""
    from bnncl.core.functional import normalize_images

    model, device, images = exported
    trace, _ = torch_trace(model, images)
    bounds = layer_bounds(model, images)
    ops = device.ops
    for k, op in enumerate(ops):
        x = normalize_images(images) if k == 0 else trace[f"{op.name}.in"]
        bits = None
        if isinstance(op, Block):  # the ±1 tensor torch's conv consumed, in this backend's form
            signs = np.where(trace[f"{op.name}.pre_sign"] < 0, -1.0, 1.0).astype(np.float32)
            bits = pack_signs(signs) if backend == "packed" else signs
        out = op.run(Activation(x.shape[-1], x, bits), backend)
        if out.real is not None:
            assert_close(out.real, trace[op.name], bounds[op.name], op.name)
        if op.out_threshold is not None:  # fused: the signs the next op consumes
            nxt = ops[k + 1]
            if isinstance(nxt, Block):  # torch: sign(x + shift) inside the next block
                pre = trace[f"{nxt.name}.pre_sign"]
                theirs, gap = np.where(pre < 0, -1.0, 1.0), np.abs(pre)
            else:  # the binarize layer: torch's output is the ±1 tensor itself
                theirs, gap = trace[nxt.name], np.abs(trace[op.name] - op.out_threshold)
            tie = bounds[op.name] * np.abs(trace[op.name]).max()  # the output's rounding (the shift's is far below)
            assert_signs_equal_except_ties(out.signs(), theirs, gap, tie, f"{op.name} -> {nxt.name}")


@pytest.mark.parametrize("backend", ["packed", "float"])
def test_predictions_and_latent_match_torch(exported, backend):
    model, device, images = exported
    trace, logits = torch_trace(model, images)
    bounds = layer_bounds(model, images)
    ours = device.logits(images, backend)
    assert_close(ours, logits, bounds["head.through"], "logits")
    np.testing.assert_array_equal(device.predict(images, backend), logits.argmax(1))
    latent = device.latent(images, backend)
    frozen = device.frozen_ops[-1].name
    if model.config.binary_boundary and frozen == "binarize":
        assert latent.real is None  # the LR activation is binary: nothing but bits crosses the split
        np.testing.assert_array_equal(latent.signs(), trace["binarize"])
        if backend == "packed":
            assert latent.bits.dtype == np.uint64
    else:
        assert_close(latent.real, trace[frozen], bounds[f"{frozen}.through"], "latent")


def test_export_records_the_split_and_is_small(tmp_path):
    config = BackboneConfig(num_classes=10, **EXPORT_CONFIGS["fmnist"])
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
    model = randomized(BackboneConfig(num_classes=10, **EXPORT_CONFIGS["fmnist"]), 0)
    save_checkpoint(tmp_path / "model.pt", model)
    with pytest.raises(ConfigError, match="block99"):
        export_checkpoint(tmp_path / "model.pt", tmp_path / "m.bnn", lr_layer="block99")
    assert not (tmp_path / "m.bnn").exists()


FMNIST = "/usr/share/datasets/fashion-mnist"


def test_whole_fashion_mnist_test_set_same_predictions(tmp_path):
    """A briefly pretrained default backbone (binary boundary at block5, so the LR layer is 1-bit), exported: the
    device runtime predicts exactly what torch predicts on all 10,000 test images, on both backends and in the C
    runtime, whose LR-layer bits equal the packed backend's on every image. Its signs at
    every binary layer up to the LR layer equal torch's, except at a tie: on 1,000 images, at the first layer where an
    image's signs differ (every sign before it equal, so the values differ by rounding only), every differing sign
    is at a value within float32 rounding of its threshold (``layer_bounds``: the network's rounding up to there);
    from there on the flip travels, and the image is no longer checked."""
    from bnncl.data import load_dataset
    from bnncl.training.pretrain import PretrainOptions, pretrain

    opts = PretrainOptions(epochs=1, batch_size=64, max_steps_per_epoch=60, progress=False, binary_boundary="block5",
                           out=str(tmp_path / "model.pt"))
    model, _ = pretrain(opts)
    export_checkpoint(tmp_path / "model.pt", tmp_path / "model.bnn")
    device = Model.load(tmp_path / "model.bnn")
    test = load_dataset("fashion-mnist", FMNIST, "test")
    model.eval()
    with torch.inference_mode():
        theirs = np.concatenate([model(normalize_tensor(torch.from_numpy(test.x[i:i + 1000]))).argmax(1).numpy()
                                 for i in range(0, len(test), 1000)])
    assert (theirs == test.y).mean() > 0.5  # a real, if briefly trained, classifier
    for backend in ("packed", "float", "c"):  # c: the C runtime on the same file
        np.testing.assert_array_equal(device.predict(test.x, backend), theirs, err_msg=backend)
    np.testing.assert_array_equal(device.latent(test.x, "c").bits, device.latent(test.x, "packed").bits)
    x = test.x[:1000]
    trace, _ = torch_trace(model, x)
    bounds = layer_bounds(model, x)
    from bnncl.core.functional import normalize_images

    ops = device.frozen_ops
    act, clean = Activation(x.shape[-1], normalize_images(x)), np.ones(len(x), bool)
    for k, op in enumerate(ops):
        act = op.run(act, "packed")
        if op.out_threshold is None or k + 1 == len(ops):
            continue
        nxt = ops[k + 1]  # as in test_every_layer_matches_torch
        if isinstance(nxt, Block):
            pre = trace[f"{nxt.name}.pre_sign"]
            theirs, gap = np.where(pre < 0, -1.0, 1.0), np.abs(pre)
        else:
            theirs, gap = trace[nxt.name], np.abs(trace[op.name] - op.out_threshold)
        diff = act.signs() != theirs
        tie = bounds[f"{op.name}.through"] * np.abs(trace[op.name]).max()
        beyond = (diff & (gap > tie)).reshape(len(x), -1).any(axis=1)
        assert not np.any(beyond & clean), f"{op.name}: signs differ away from a tie on {(beyond & clean).sum()} images"
        clean &= ~diff.reshape(len(x), -1).any(axis=1)
    np.testing.assert_array_equal(act.signs()[clean], trace["binarize"][clean])
    assert clean.sum() >= len(x) // 2  # most images reach the LR layer with every sign equal to torch's


def test_graph_and_input_tensors_describe_the_network_as_the_spec_says(exported):
    """docs/model-format.md: ``graph`` (int32, one row of 20 per layer of the metadata's layer table, in order) and
    ``input`` (int32: height, width, channels, classes). The tensor indices are checked against the file's own
    tensor table, parsed with ``struct`` (count at 24, table at 28, 64-byte entries, the name's offset and length
    first)."""
    import struct
    from pathlib import Path

    from bnncl.device.modelfile import read_model_file

    _, device, _ = exported
    meta, arrays = read_model_file(device.path)
    data = Path(device.path).read_bytes()
    count, table = struct.unpack_from("<II", data, 24)
    names = []
    for i in range(count):
        name_at, name_len = struct.unpack_from("<II", data, table + 64 * i)
        names.append(data[name_at:name_at + name_len].decode())
    index = {name: i for i, name in enumerate(names)}
    assert set(index) == set(arrays) and len(index) == count
    kinds = {"stem": 1, "block": 2, "binarize": 3, "pool": 4, "head": 5}
    shortcuts = {"identity": 0, "duplicate": 1, "binary": 2}
    fields = {  # column -> the tensor <layer>.<field> it names
        "stem": {8: "weight", 9: "bias"},
        "block": {8: "conv.weight", 9: "mult", 10: "bias", 11: "threshold", 12: "input_scale",
                  13: "rprelu.shift_in", 14: "rprelu.slope", 15: "rprelu.shift_out", 16: "shortcut.weight",
                  17: "shortcut.mult", 18: "shortcut.bias", 19: "shortcut.threshold"},
        "binarize": {11: "threshold"}, "pool": {}, "head": {8: "weight"},
    }
    graph, layers = arrays["graph"], meta["layers"]
    assert graph.dtype == np.int32 and graph.shape == (len(layers), 20)
    assert [layer["name"] for layer in layers] == [op.name for op in device.ops]
    seen = set()
    for row, layer in zip(graph, layers):
        kind, name = layer["kind"], layer["name"]
        assert row[0] == kinds[kind], name
        assert row[7] == int(name == meta["lr_layer"]), name
        if kind == "block":
            sc = layer["shortcut"]
            assert tuple(row[1:7]) == (layer["cin"], layer["cout"], layer["stride"], int(layer["binary_input"]),
                                       shortcuts[sc["kind"]], sc.get("repeat", 0)), name
        else:
            assert not row[4:7].any(), name
        if kind == "stem":
            cout, kh, kw, cin = arrays[f"{name}.weight"].shape
            assert (kh, kw) == (3, 3) and arrays[f"{name}.weight"].dtype == np.float32
            assert tuple(row[1:4]) == (cin, cout, layer["stride"]), name
        if kind == "head":
            classes, features = arrays[f"{name}.weight"].shape
            assert classes == len(meta["class_names"]) and arrays[f"{name}.weight"].dtype == np.float32
            assert tuple(row[1:3]) == (features, classes), name
        for col in range(8, 20):
            field = fields[kind].get(col)
            expected = index.get(f"{name}.{field}", -1) if field else -1
            assert row[col] == expected, f"{name} column {col}: {row[col]}, the tensor table has {expected}"
            if expected >= 0:
                seen.add(names[row[col]])
        for col in (8, 9, 10, 13, 14, 15) if kind == "block" else ():
            assert row[col] >= 0, f"{name} column {col}: every block has it"
        if kind == "block":
            assert (row[11] >= 0) != bool(layer["binary_input"]) and (row[12] >= 0) == bool(layer["binary_input"])
            assert (row[16:20] >= 0).all() == (layer["shortcut"]["kind"] == "binary"), name
            assert (row[16:20] >= 0).any() == (layer["shortcut"]["kind"] == "binary"), name
    assert graph[:, 7].sum() == 1
    # every tensor of the network (all but the learner's train.* and graph/input themselves) is named by the graph
    assert seen == {n for n in names if not n.startswith("train.")} - {"graph", "input"}
    assert arrays["input"].dtype == np.int32
    assert arrays["input"].tolist() == [*meta["input_shape"], len(meta["class_names"])]
    # the configurations exercise what the columns can say
    if device.meta["architecture"].get("shortcut") == "binary":
        assert (graph[:, 5] == 2).any()
    if device.meta["architecture"].get("binary_boundary"):
        assert (graph[graph[:, 0] == 2, 4] == 1).any()


C_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "bnn.h"
extern const unsigned char my_model[];
extern const size_t my_model_size;
int main(void)
{
    bnn_error err;
    size_t need;
    bnn_model *m;
    uint8_t image[28 * 28] = {0};
    int32_t label;
    if ((uintptr_t)my_model % 8) return 3;
    if (bnn_arena_size(my_model, my_model_size, &need, &err)) { fprintf(stderr, "%s\n", err.message); return 4; }
    void *arena = malloc(need);
    if (bnn_init(my_model, my_model_size, arena, need, &m, &err)) { fprintf(stderr, "%s\n", err.message); return 5; }
    if (bnn_predict(m, image, 1, &label, &err)) return 6;
    fprintf(stderr, "label %d\n", (int)label);
    fwrite(my_model, 1, my_model_size, stdout);
    free(arena);
    return 0;
}
"""


def test_export_c_source_is_the_model_file_for_a_firmware(tmp_path, capsys):
    """bnncl export --c-source: a C11 source whose array, compiled and linked with the C runtime, is the model file's
    bytes at an 8-byte boundary, and which bnn_init takes and predicts with (the model file's own prediction)."""
    import shutil
    import subprocess
    from pathlib import Path

    from bnncl.cli import main

    if shutil.which("gcc") is None:  # the machine's own compiler: the toolchain the runtime's tests build with
        pytest.fail("gcc not found")
    runtime = Path(__file__).resolve().parents[1] / "runtime"
    save_checkpoint(tmp_path / "model.pt", randomized(BackboneConfig(num_classes=10, **EXPORT_CONFIGS["fmnist"]), 0))
    argv = ["export", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.bnn"), "--c-source", str(tmp_path / "m.c"),
            "--c-name", "my_model"]
    assert main(argv) == 0 and "m.c: its" in capsys.readouterr().out
    (tmp_path / "main.c").write_text(C_MAIN)
    sources = [runtime / "src" / f for f in ("kernels_portable.c", "bnn_common.c", "bnn_model.c")]
    subprocess.run(["gcc", "-std=c11", "-O1", "-ffp-contract=off", "-I", str(runtime / "include"), *map(str, sources),
                    str(tmp_path / "m.c"), str(tmp_path / "main.c"), "-lm", "-o", str(tmp_path / "run")], check=True)
    run = subprocess.run([str(tmp_path / "run")], capture_output=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout == (tmp_path / "m.bnn").read_bytes()
    expected = Model.load(tmp_path / "m.bnn").predict(np.zeros((1, 28, 28, 1), np.uint8))[0]
    assert run.stderr.decode().strip() == f"label {expected}"
    # a second export replaces its own C source; a file it did not write, or a name that is not C, is refused
    assert main(argv) == 0
    (tmp_path / "other.c").write_text("int main(void) { return 0; }\n")
    assert main([*argv[:4], "--c-source", str(tmp_path / "other.c")]) == 2
    assert (tmp_path / "other.c").read_text() == "int main(void) { return 0; }\n"
    assert main([*argv[:-1], "2bad"]) == 2
    assert "not a C identifier" in capsys.readouterr().err
