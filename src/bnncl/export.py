"""``bnncl export``: a trained checkpoint (torch) -> the device's model file (NumPy arrays, no torch needed to read).

What the file holds, layer by layer (names as in the torch model):

* ``stem``: float32 conv weights (Cout, kh, kw, Cin) with BN folded in, and a bias;
* every block: the input threshold ``-shift`` (its ``sign(x + shift)``), the conv's signs packed along input channels,
  ``mult``/``bias`` (scale ``mean|W|`` and BN folded), RPReLU's two shifts and slope, and the shortcut (identity,
  pool + duplicate, or pool + threshold + packed 1x1 conv + folded BN; a per-channel scale at a binary boundary);
* ``binarize``: its threshold; ``head``: float32 weights.

Blocks of the trainable part (at and above the latent-replay layer) also keep their unfolded per-channel vectors
(``train.<layer>.<parameter>``: BN parameters and running statistics, shifts, slopes, conv scales), which on-device
learning starts from. Their latent float conv weights are kept only when asked (``latent_weights``): work B's
re-binarized update reads only their signs and scale, the plain update continues from the latent values.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bnncl import __version__
from bnncl.binarizers import weight_scale
from bnncl.checkpoint import load_model
from bnncl.core.errors import ConfigError
from bnncl.core.protocol import backbone_lr_layer, check_lr_layer
from bnncl.device.fold import fold_binary_conv_bn, fold_conv_bn, pack_conv_weights
from bnncl.device.kernels import conv_weights_for_kernel
from bnncl.device.modelfile import write_model_file
from bnncl.layers import BinarizeInput, BinaryBlock, BinaryConv2d, Downsample, PoolDuplicate
from bnncl.models import BinaryResNet
from bnncl.models.backbone import GlobalAvgPool, Stem

PRECISION = {
    "stem": "float32 weights with BN folded, zero padding",
    "binary_convs": "1-bit weights packed along input channels (uint64 words, bit set = -1), float32 per-channel "
                    "multiplier and bias (scale mean|W| and BN folded), padding +1",
    "activations": "1 bit into every binary conv (per-channel thresholds); float32 on the residual path",
    "head": "float32",
    "trainable_vectors": "float32",
    "q_f": None, "q_b": None, "q_bin": None,  # the hybrid-quantized learning step's bit widths, once set
}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _binary_conv(conv: BinaryConv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """packed signs in the kernels' layout (kh, kw, words, Cout), alpha, mult, bias. alpha is computed by the forward's
    own torch code."""
    alpha = _np(weight_scale(conv.weight).flatten())
    packed = conv_weights_for_kernel(pack_conv_weights(_np(conv.weight)))
    mult, bias = fold_binary_conv_bn(alpha, _np(bn.weight), _np(bn.bias), _np(bn.running_mean), _np(bn.running_var),
                                     bn.eps)
    return packed, alpha, mult, bias


def _block(name: str, block: BinaryBlock, arrays: dict) -> dict:
    conv = block.conv
    spec = {"kind": "block", "name": name, "cin": conv.in_channels, "cout": conv.out_channels, "stride": conv.stride[0],
            "binary_input": block.binary_input}
    if not block.binary_input:
        arrays[f"{name}.threshold"] = -_np(block.shift.bias)
    else:
        arrays[f"{name}.input_scale"] = _np(block.input_scale.scale)
    packed, alpha, mult, bias = _binary_conv(conv, block.bn)
    arrays[f"{name}.conv.weight"], arrays[f"{name}.mult"], arrays[f"{name}.bias"] = packed, mult, bias
    arrays[f"{name}.rprelu.shift_in"] = _np(block.act.shift_in.bias)
    arrays[f"{name}.rprelu.slope"] = _np(block.act.prelu.weight)
    arrays[f"{name}.rprelu.shift_out"] = _np(block.act.shift_out.bias)
    sc = block.shortcut
    if isinstance(sc, nn.Identity):
        spec["shortcut"] = {"kind": "identity", "stride": 1}
    elif isinstance(sc, PoolDuplicate):
        spec["shortcut"] = {"kind": "duplicate", "stride": conv.stride[0], "repeat": sc.repeat}
    elif isinstance(sc, Downsample):
        spec["shortcut"] = {"kind": "binary", "stride": conv.stride[0]}
        arrays[f"{name}.shortcut.threshold"] = -_np(sc.shift.bias)
        packed, alpha_sc, mult, bias = _binary_conv(sc.conv, sc.bn)
        (arrays[f"{name}.shortcut.weight"], arrays[f"{name}.shortcut.mult"],
         arrays[f"{name}.shortcut.bias"]) = packed, mult, bias
        arrays[f"train.{name}.shortcut.conv.alpha"] = alpha_sc
    else:
        raise ConfigError(f"{name}: cannot export a shortcut of type {type(sc).__name__}")
    arrays[f"train.{name}.conv.alpha"] = alpha
    return spec


def export_arrays(model: BinaryResNet, lr_layer: str,
                  latent_weights: bool = False) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The layer table and arrays of the model file; ``latent_weights``: also the float32 latent conv weights of the
    trainable blocks (``train.<block>.conv.latent``), which the device learner's plain update continues from."""
    check_lr_layer(lr_layer, model.split_points)
    layers, arrays = [], {}
    names = list(model.layers)
    trainable = set(names[names.index(lr_layer):])
    with torch.no_grad():
        for name, module in model.layers.items():
            if isinstance(module, Stem):
                w, b = fold_conv_bn(_np(module.conv.weight), _np(module.bn.weight), _np(module.bn.bias),
                                    _np(module.bn.running_mean), _np(module.bn.running_var), module.bn.eps)
                arrays[f"{name}.weight"], arrays[f"{name}.bias"] = w, b
                layers.append({"kind": "stem", "name": name, "stride": module.conv.stride[0]})
            elif isinstance(module, BinaryBlock):
                layers.append(_block(name, module, arrays))
            elif isinstance(module, BinarizeInput):
                arrays[f"{name}.threshold"] = -_np(module.shift.bias)
                layers.append({"kind": "binarize", "name": name})
            elif isinstance(module, GlobalAvgPool):
                layers.append({"kind": "pool", "name": name})
            elif isinstance(module, nn.Linear) and name == "head":
                arrays[f"{name}.weight"] = _np(module.weight)
                layers.append({"kind": "head", "name": name})
            else:
                raise ConfigError(f"{name}: cannot export a layer of type {type(module).__name__}")
            if name in trainable and name != "head":
                for key, t in module.state_dict().items():
                    if t.is_floating_point() and t.dim() == 1:  # per-channel vectors; latent conv weights are 4-D
                        arrays[f"train.{name}.{key}"] = _np(t)
                if latent_weights and isinstance(module, BinaryBlock):
                    arrays[f"train.{name}.conv.latent"] = _np(module.conv.weight)
    # Frozen blocks need no unfolded vectors.
    arrays = {k: v for k, v in arrays.items() if not k.startswith("train.") or k.split(".")[1] in trainable}
    return layers, arrays


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, lr_layer: str | None = None,
                      latent_weights: bool = False) -> dict:
    """Export ``checkpoint`` to the model file ``out``; returns the file's metadata."""
    model, payload = load_model(checkpoint)
    lr_layer = lr_layer or backbone_lr_layer(model.config.binary_boundary, model.config.stages)
    try:
        check_lr_layer(lr_layer, model.split_points)
    except ConfigError as e:
        raise ConfigError(f"{checkpoint}: {e}") from None
    layers, arrays = export_arrays(model, lr_layer, latent_weights)
    meta_in = payload.get("meta", {})
    config = model.config
    class_names = meta_in.get("class_names") or [str(i) for i in range(config.num_classes)]
    names = [layer["name"] for layer in layers]
    k = names.index(lr_layer)
    bn_eps = {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    meta = {
        "bnncl_version": __version__,
        "architecture": config.to_dict(),
        "description": config.describe(),
        "input_shape": list(config.input_shape),
        "input_normalization": "x / 127.5 - 1 on uint8 pixels, NHWC",
        "class_names": list(class_names),
        "lr_layer": lr_layer,
        "frozen": names[:k],
        "trainable": names[k:],
        "layers": layers,
        "precision": PRECISION,
        "bn_eps": sorted(bn_eps)[0] if len(bn_eps) == 1 else sorted(bn_eps),
        "source": {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest(),
            "train_set": meta_in.get("train_set"),
            "trained_classes": meta_in.get("trained_classes"),
            "epochs": payload.get("epoch"),
        },
    }
    write_model_file(out, meta, arrays)
    return meta


# -- the model file as a C source, for a firmware's flash --------------------------------------------------------------

C_SOURCE_MARK = "/* Written by bnncl export --c-source"


def check_c_name(name: str) -> None:
    """A C identifier (ASCII letters, digits, underscores; not starting with a digit)."""
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"--c-name {name!r}: not a C identifier (letters, digits and underscores, not first a digit)")


def write_c_source(model_path: str | os.PathLike, out: str | os.PathLike, name: str) -> None:
    """``model_path``'s bytes as a C11 source: ``const unsigned char name[]`` (aligned to 8 bytes, as bnn_init asks)
    and ``const size_t name_size``. A const array goes to flash (.rodata) on a microcontroller: the runtime reads the
    model there in place. Written atomically."""
    from bnncl.core.atomic import atomic_write_text

    check_c_name(name)
    data = Path(model_path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    text = (f"{C_SOURCE_MARK} from {Path(model_path).name} ({len(data)} bytes, sha256 {digest}). */\n"
            "#include <stddef.h>\n\n"
            f"_Alignas(8) const unsigned char {name}[{len(data)}] = {{\n    " + ",\n    ".join(rows) + "\n};\n"
            f"const size_t {name}_size = {len(data)};\n")
    atomic_write_text(out, text)

