"""The trainable part of the on-device learner, above the latent-replay (LR) layer. NumPy + numba.

* :class:`HeadPart` (LR layer ``head``, work A): the bias-free head alone, stored at ``q_b`` as an
  :class:`~bnncl.device.integer_step.IntTensor` and trained by :class:`~bnncl.device.integer_step.IntegerHeadStep`.
* :class:`BlocksPart` (LR layer at a block, work B): the blocks above it, the global pool and the head, trained by
  the simulation's hand-written quantized back-propagation (:class:`~bnncl.core.backprop.QuantizedBackprop`)
  with the device's integer quantizers and integer conv/matmul products (:mod:`bnncl.device.integer_step`). After each
  experience the blocks' inference form (packed signs, folded BN, thresholds) is rebuilt from the trained parameters,
  so prediction runs on the bit-packed kernels.

The head part holds the head as its levels while an experience trains; the blocks part holds float32 working values
of its parameters, on the ``q_b``/``q_bin`` grids when quantized. Both report the bytes of the parameters at their
stored precision.
"""

from __future__ import annotations

import numpy as np

from bnncl.core.affine import FLOAT_BITS
from bnncl.core.backprop import Bits, BlockParams, NumpyConv, QuantizedBackprop
from bnncl.core.errors import ConfigError, LearnerStateError
from bnncl.device import kernels  # col2im (numba) loads on first use: the blocks' path only
from bnncl.device.bitpack import unpack_signs
from bnncl.device.fold import fold_binary_conv_bn, pack_conv_weights
from bnncl.device.integer_step import IntegerBits, IntegerConv, IntegerHeadStep, float_head_step, quantized_bytes
from bnncl.device.kernels import conv_weights_for_kernel
from bnncl.device.model import Model
from bnncl.device.ops import Block, GlobalPool, Head

TRAINABLE_VECTORS = ("shift", "input_scale", "bn_weight", "bn_bias", "running_mean", "running_var", "shift_in", "slope",
                     "shift_out")
_FILE_KEYS = {"shift": "shift.bias", "input_scale": "input_scale.scale", "bn_weight": "bn.weight", "bn_bias": "bn.bias",
              "running_mean": "bn.running_mean", "running_var": "bn.running_var", "shift_in": "act.shift_in.bias",
              "slope": "act.prelu.weight", "shift_out": "act.shift_out.bias"}


class HeadPart:
    """Trains the head on pooled features (N, features) float32."""

    def __init__(self, model: Model, options, rng: np.random.Generator):
        self.head_op = model.trainable_ops[-1]
        self.fp32 = options.q_f >= FLOAT_BITS
        self.lr, self.q_b = options.lr, options.q_b
        self.step = None if self.fp32 else IntegerHeadStep(options.q_f, options.q_b, options.lr, options.q_rounding,
                                                           rng)
        self.head = None

    def begin(self, rows: np.ndarray) -> None:
        self.head = rows.astype(np.float32) if self.fp32 else self.step.store(rows)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        if self.fp32:
            self.head, result = float_head_step(self.head, x, y, self.lr)
        else:
            self.head, result = self.step(self.head, x, y)
        return result.loss

    def head_values(self) -> np.ndarray:
        return self.head if self.fp32 else self.head.value()

    def end(self, inference_rows: np.ndarray) -> None:
        self.head_op.weight = np.ascontiguousarray(inference_rows, np.float32)
        self.head = None

    def nbytes(self) -> dict:
        c, f = self.head_op.weight.shape
        return {"trainable_head": 4 * c * f if self.fp32 else quantized_bytes(c * f, self.q_b)}

    def state(self) -> dict:
        return {}

    def load_state(self, arrays: dict) -> None:
        pass


class BlocksPart:
    """Trains the blocks above the LR layer, the pool and the head on the LR layer's activations (N, C, H, W)."""

    def __init__(self, model: Model, options, rng: np.random.Generator):
        ops = model.trainable_ops
        self.blocks_ops = [op for op in ops if isinstance(op, Block)]
        self.head_op = ops[-1]
        if [type(op) for op in ops] != [Block] * len(self.blocks_ops) + [GlobalPool, Head]:
            raise ConfigError(f"{model.path}: the device learner trains blocks, then the pool and the head; the part "
                              f"above {model.lr_layer} is {', '.join(op.name for op in ops)}")
        arch = model.meta["architecture"]
        eps = model.meta.get("bn_eps", 1e-5)
        if isinstance(eps, list):
            raise ConfigError(f"{model.path}: blocks with different BatchNorm eps ({eps}) are not supported")
        self.plain = options.q_bin_update == "plain"
        self.params = [self._params(model, op, arch.get("activation", "approx"), float(eps)) for op in self.blocks_ops]
        self.fp32 = min(options.q_f, options.q_b, options.q_bin) >= FLOAT_BITS  # mixed widths: refused by the Learner
        self.bits = Bits() if self.fp32 else IntegerBits(options.q_f, options.q_b, options.q_bin, options.q_rounding,
                                                         rng)
        self.conv = NumpyConv(scatter=kernels.col2im) if self.fp32 else IntegerConv()  # col2im: the kernel, held equal
        self.options = options
        self.head = np.array(self.head_op.weight, np.float32)
        self.bp = QuantizedBackprop(self.params, self.head, self.bits, self.conv)

    def _params(self, model: Model, op: Block, activation: str, eps: float) -> BlockParams:
        name = op.name
        if op.shortcut["kind"] not in ("identity", "duplicate"):
            raise ConfigError(f"{model.path}: the device learner cannot train {name}'s {op.shortcut['kind']} shortcut "
                              "(identity and pool-duplicate shortcuts only)")
        arrays = model.train_arrays
        if f"train.{name}.conv.alpha" not in arrays:
            raise ConfigError(f"{model.path}: no trainable parameters of {name} in this model file (it was exported "
                              f"with its latent-replay layer at {model.meta['lr_layer']}); export it with --lr-layer "
                              f"{name} (or a layer before it) to train there")

        def vec(key):
            full = f"train.{name}.{_FILE_KEYS[key]}"
            return np.array(arrays[full], np.float32) if full in arrays else None

        latent_key = f"train.{name}.conv.latent"
        if latent_key in arrays:
            weight = np.array(arrays[latent_key], np.float32)
        elif self.plain:
            raise ConfigError(f"{model.path}: the plain update needs the latent weights of {name}; export with "
                              "--latent-weights (the re-binarized update needs only their signs and scale)")
        else:  # sign(W) * mean|W|: the same signs and scale as the latent weights, all the re-binarized update reads
            signs = unpack_signs(np.ascontiguousarray(op.weight_kernel.transpose(3, 0, 1, 2)), op.cin)  # Cout,3,3,Cin
            alpha = np.asarray(arrays[f"train.{name}.conv.alpha"], np.float32)
            weight = np.ascontiguousarray(signs.transpose(0, 3, 1, 2)) * alpha[:, None, None, None]
        return BlockParams(name=name, weight=weight, stride=op.stride, binary_input=op.binary_input,
                           shortcut=op.shortcut["kind"], eps=eps, momentum=0.1, activation=activation,
                           **{k: vec(k) for k in TRAINABLE_VECTORS})

    def begin(self, rows: np.ndarray) -> None:
        self.head[:] = rows

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss = self.bp.loss_and_backward(x, y)
        self.bp.sgd_step(self.options.lr, rebinarize=not self.plain)
        return loss

    def head_values(self) -> np.ndarray:
        return self.head

    def end(self, inference_rows: np.ndarray) -> None:
        """Rebuild the blocks' inference form from the trained parameters; the head becomes the consolidated rows."""
        for op, p in zip(self.blocks_ops, self.params):
            alpha = np.abs(p.weight).mean(axis=(1, 2, 3), dtype=np.float32)
            op.weight_kernel = conv_weights_for_kernel(pack_conv_weights(p.weight))
            op.__dict__.pop("weight_float", None)  # the float backend's copy, rebuilt on use
            mult, bias = fold_binary_conv_bn(alpha, p.bn_weight, p.bn_bias, p.running_mean, p.running_var, p.eps)
            op.mult[:], op.bias[:] = mult, bias
            for dst, src in zip(op.rprelu, (p.shift_in, p.slope, p.shift_out)):
                dst[:] = src
            if p.binary_input:
                op.input_scale[:] = p.input_scale
            else:
                op.in_threshold[:] = -p.shift  # the array the previous op's fused threshold refers to
        self.head_op.weight = np.ascontiguousarray(inference_rows, np.float32)
        self.head[:] = inference_rows

    def peak_step_bytes(self, batch: int, latent_shape) -> int:
        """An estimate (before the learner has measured a step) of the arrays one step keeps for its backward pass,
        batch of ``batch``: per block its input, the conv's columns, the BN and RPReLU intermediates, its output."""
        total, (c, h, w) = 0, latent_shape
        col_bytes = 4 if self.fp32 else 1  # float32 columns (float conv) or ±1 int8 (integer conv)
        for p in self.params:
            cout = p.weight.shape[0]
            ho, wo = -(-h // p.stride), -(-w // p.stride)
            total += batch * 4 * (2 * c * h * w + 4 * cout * ho * wo) + batch * ho * wo * 9 * c * col_bytes
            c, h, w = cout, ho, wo
        return total

    def nbytes(self) -> dict:
        """The trainable state at its stored precision: binary latent weights at q_bin, BN in float32 (parameters and
        running statistics), the other vectors and the head at q_b."""
        o = self.options

        def stored(arrays, bits):  # each tensor at its bit width with its scale and zero point, or float32
            return sum(4 * a.size if self.fp32 else quantized_bytes(a.size, bits) for a in arrays)

        vectors = [getattr(p, k) for p in self.params
                   for k in ("shift", "input_scale", "shift_in", "slope", "shift_out") if getattr(p, k) is not None]
        return {"trainable_binary_latent_weights": stored([p.weight for p in self.params], o.q_bin),
                "trainable_batchnorm_fp32": sum(4 * 4 * p.bn_weight.size for p in self.params),
                "trainable_other_vectors": stored(vectors, o.q_b), "trainable_head": stored([self.head], o.q_b)}

    def state(self) -> dict:
        """The trained parameters; stored as float32 here (values on their grids), counted at their precision."""
        out = {}
        for p in self.params:
            out[f"blocks.{p.name}.weight"] = p.weight.copy()
            for k in TRAINABLE_VECTORS:
                if getattr(p, k) is not None:
                    out[f"blocks.{p.name}.{k}"] = getattr(p, k).copy()
        return out

    def load_state(self, arrays: dict) -> None:
        for p in self.params:
            for k in ("weight", *TRAINABLE_VECTORS):
                if getattr(p, k) is None:
                    continue
                a = arrays.get(f"blocks.{p.name}.{k}")
                if a is None or a.shape != getattr(p, k).shape:
                    raise LearnerStateError(f"trained parameter {p.name}.{k} is missing or of the wrong shape")
                getattr(p, k)[...] = a
        self.end(self.head_op.weight)
