"""Per-layer summary: parameters by bit width, memory at deployed precision, binary vs float MACs.

Deployed precision: a binary layer stores 1 bit per weight plus one float32 scale per output channel; everything
else (stem, BN folded to a scale and a bias per channel, shifts, PReLU slopes, head) stays float32. The fp32 copy
is the same network with every weight in float32 (BN folded the same way), so the ratio is what binarization saves.
MACs are per image and count convolutions and linear layers; element-wise ops (BN, shifts, PReLU) are not MACs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from bnncl.layers import BinaryConv2d, BinaryLinear


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple
    params_1bit: int
    params_32bit: int
    bytes_deployed: int
    bytes_fp32: int
    binary_macs: int
    float_macs: int


def _row(name: str, m: nn.Module, out: torch.Tensor) -> LayerRow | None:
    per_image_out = out[0].numel()
    bits1 = bits32 = bmacs = fmacs = 0
    binary = isinstance(m, (BinaryConv2d, BinaryLinear))
    if isinstance(m, nn.Conv2d):
        macs = per_image_out * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    elif isinstance(m, nn.Linear):
        macs = m.in_features * m.out_features
    else:
        macs = 0
    if binary:
        bits1, bits32, bmacs = m.weight.numel(), m.weight.shape[0], macs
        fp32_params = m.weight.numel()
    elif isinstance(m, (nn.Conv2d, nn.Linear)):
        bits32 = fp32_params = m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        fmacs = macs
    elif isinstance(m, nn.BatchNorm2d):
        bits32 = fp32_params = 2 * m.num_features  # folded: scale and bias
    elif any(True for _ in m.parameters(recurse=False)):  # shifts, scales, PReLU slopes: float per channel
        bits32 = fp32_params = sum(p.numel() for p in m.parameters(recurse=False))
    else:  # parameter-free (pooling, identity, binarizer)
        return None
    return LayerRow(
        name=name,
        kind=type(m).__name__,
        output_shape=tuple(out.shape[1:]),
        params_1bit=bits1,
        params_32bit=bits32,
        bytes_deployed=math.ceil(bits1 / 8) + 4 * bits32,
        bytes_fp32=4 * fp32_params,
        binary_macs=bmacs,
        float_macs=fmacs,
    )


@torch.no_grad()
def summarize(model: nn.Module) -> dict:
    """Run one dummy image through ``model`` and return ``{"layers": [...], "totals": {...}}``."""
    h, w, c = model.config.input_shape
    rows: list[LayerRow] = []
    hooks = []
    for name, m in model.named_modules():
        if not any(True for _ in m.children()):  # leaves only
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: rows.append(_row(name.removeprefix("layers."), mod, out))))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, c, h, w))
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was_training)
    rows = [r for r in rows if r is not None]
    keys = ["params_1bit", "params_32bit", "bytes_deployed", "bytes_fp32", "binary_macs", "float_macs"]
    totals = {k: sum(getattr(r, k) for r in rows) for k in keys}
    totals["fp32_over_deployed"] = totals["bytes_fp32"] / totals["bytes_deployed"]
    return {"architecture": model.config.describe(), "layers": [asdict(r) for r in rows], "totals": totals}


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_summary(s: dict) -> str:
    head = (f"{'layer':<28} {'kind':<13} {'output':<13} {'1-bit':>9} {'32-bit':>8} {'deployed':>11} {'fp32':>11} "
            f"{'binary MACs':>12} {'float MACs':>11}")
    lines = [s["architecture"], head, "-" * len(head)]
    for r in s["layers"]:
        shape = "x".join(map(str, r["output_shape"]))
        lines.append(
            f"{r['name']:<28} {r['kind']:<13} {shape:<13} {r['params_1bit']:>9,} {r['params_32bit']:>8,} "
            f"{_fmt_bytes(r['bytes_deployed']):>11} {_fmt_bytes(r['bytes_fp32']):>11} {r['binary_macs']:>12,} "
            f"{r['float_macs']:>11,}"
        )
    t = s["totals"]
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<28} {'':<13} {'':<13} {t['params_1bit']:>9,} {t['params_32bit']:>8,} "
        f"{_fmt_bytes(t['bytes_deployed']):>11} {_fmt_bytes(t['bytes_fp32']):>11} {t['binary_macs']:>12,} "
        f"{t['float_macs']:>11,}"
    )
    share = t["binary_macs"] / max(1, t["binary_macs"] + t["float_macs"])
    lines.append(
        f"deployed model {_fmt_bytes(t['bytes_deployed'])} vs fp32 copy {_fmt_bytes(t['bytes_fp32'])}: "
        f"{t['fp32_over_deployed']:.1f}x smaller; {share:.1%} of MACs are binary"
    )
    return "\n".join(lines)
