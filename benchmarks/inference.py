"""Inference benchmark of the device runtime (bit-packed XNOR-popcount kernels) on the default Fashion-MNIST backbone.

The packed backend runs the C runtime's kernels (``runtime/``, through ctypes, a batch split over
``cruntime.set_num_threads`` threads); section 4 times the binary convs and the popcount peak (numba microkernels,
``popcount_peak.py``) on one thread each.

Sections, all measured in one run (the machine is shared: every timing is the minimum per-call time over interleaved
rounds of repeats, and only ratios measured in this run are compared):

1. sizes: the exported model file vs the checkpoint vs the fp32 state dict;
2. the frozen part (stem -> the latent-replay layer) and the whole network at batch 1 and 64: the device's packed
   backend (the C kernels) vs torch fp32 eager (as trained, and with the binary weights binarized once beforehand) vs
   the NumPy float equivalent of the exported model;
3. per-layer times of every backend;
4. the binary convs' throughput against this CPU's xor-popcount peak (measured before and after the layers);
5. CPU facts: the popcount and AVX-512 flags, the C library's kernel path (portable, avx2, avx512 or neon: chosen
   when the package was built), the threads;
6. start-up: ``import bnncl.device; Model.load(path).predict(one image)`` in a fresh process (numba not imported).

Usage: python benchmarks/inference.py [--checkpoint runs/bench/pretrain/model.pt] [--out runs/bench/inference.json]
       [--quick]
Without the checkpoint a randomly initialized model is used (speed does not depend on weight values).
"""

import argparse
import atexit
import copy
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnncl.binarizers import magnitude_aware_sign
from bnncl.checkpoint import load_model
from bnncl.data.idx import load_idx_dataset
from bnncl.device import Model, cruntime
from bnncl.device import kernels as K
from bnncl.device.bitpack import WORD_BITS, words_for
from bnncl.device.modelfile import read_model_file
from bnncl.export import export_checkpoint
from bnncl.layers import PAD_VALUE, BinaryConv2d
from bnncl.models.backbone import normalize_tensor
from common import (
    compare,
    cpu_name,
    describe_machine,
    kib,
    machine_info,
    random_checkpoint,
    reps_for,
    table,
    write_json,
)
from popcount_peak import popcount_sweeps_against_key, xor_popcount_sweeps

BATCHES = (1, 64)
IMPLS = ("packed", "torch", "torch_prebin", "float")
LABELS = {"packed": "device packed (C kernels)", "torch": "torch fp32 eager",
          "torch_prebin": "torch fp32, weights pre-binarized",
          "float": "NumPy float equivalent"}
PEAK_WORDS = (256, 512, 1024, 2048)
TARGETS = {"speedup": 5.0, "peak_percent": 50.0, "size_ratio": 10.0}

perf = time.perf_counter


def per_layer(fns: dict, seconds: float, rounds: int) -> dict:
    """``fns[k](timings)`` accumulates seconds per layer; per layer: the best round's mean per call."""
    for fn in fns.values():
        fn({})
    out = {k: {} for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            reps = reps_for(lambda: fn({}), seconds / rounds, max_reps=5000)
            acc = {}
            for _ in range(reps):
                fn(acc)
            for layer, s in acc.items():
                out[k][layer] = min(out[k].get(layer, math.inf), s / reps)
    return out


# -- the models ----------------------------------------------------------------------------------------------------

def prebinarize(model: nn.Module) -> nn.Module:
    """A copy whose binary convs use sign(W) * mean|W| computed once: the forward is input binarizer, +1 padding and
    F.conv2d with the cached weight (torch's own forward re-binarizes the latent weights on every call)."""
    model = copy.deepcopy(model)
    for conv in model.modules():
        if isinstance(conv, BinaryConv2d):
            with torch.no_grad():
                wq = magnitude_aware_sign(conv.weight).detach().clone()

            def forward(x, conv=conv, wq=wq):
                xb = conv._binarize(x)
                if conv.pad:
                    xb = F.pad(xb, (conv.pad,) * 4, value=PAD_VALUE)
                return F.conv2d(xb, wq, None, conv.stride, 0, conv.dilation, conv.groups)

            conv.forward = forward
    return model


def state_dict_fp32_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if t.dtype == torch.float32)


def block_input_shapes(m: Model) -> dict:
    """(H, W) of every Block's input, from the model's input size and the convs' strides (3x3, padding 1)."""
    h, w, _ = m.input_shape
    shapes = {}
    for op in m.ops:
        stride = getattr(op, "stride", None)
        if stride is None:
            continue
        if op in m.binary_layers():
            shapes[op.name] = (h, w)
        h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
    return shapes


def random_packed(rng, shape, channels: int) -> np.ndarray:
    """Random packed signs with the unused tail bits 0, as the packing leaves them."""
    x = np.frombuffer(rng.bytes(8 * int(np.prod(shape))), np.uint64).reshape(shape).copy()
    tail = channels % WORD_BITS
    if tail:
        x[..., -1] &= np.uint64((1 << tail) - 1)
    return x


# -- the popcount peak ---------------------------------------------------------------------------------------------

def popcount_peak(rng, seconds: float, repeats: int) -> dict:
    """Two loops over cache-resident words, each sized by PEAK_WORDS: xor of two arrays + popcount (two loads per
    word), and xor against a per-sweep key + popcount (one load per word, the conv kernels' mix). The peak is the
    best of both. On numba's threads (main sets them to the C kernels' count)."""
    threads = numba.get_num_threads()
    forms = {
        "two arrays": lambda a, b, n: xor_popcount_sweeps(a, b, n),
        "against a key": lambda a, b, n: popcount_sweeps_against_key(a, n),
    }
    rows = []
    for form, fn in forms.items():
        for n in PEAK_WORDS:
            a, b = random_packed(rng, (threads, n), 64), random_packed(rng, (threads, n), 64)
            fn(a, b, 10)
            probe = 2000
            t0 = perf()
            fn(a, b, probe)
            sweeps = max(1, int(seconds / max(perf() - t0, 1e-7) * probe))
            best = math.inf
            for _ in range(repeats):
                t0 = perf()
                fn(a, b, sweeps)
                best = min(best, perf() - t0)
            words = threads * n * sweeps
            rows.append({"form": form, "words_per_thread": n, "sweeps": sweeps, "seconds": best,
                         "gwords_per_s": words / best / 1e9})
    return {"threads": threads, "rows": rows, "gwords_per_s": max(r["gwords_per_s"] for r in rows)}


# -- subprocesses --------------------------------------------------------------------------------------------------

STARTUP_SCRIPT = r"""
import time
t0 = time.perf_counter()
import json, sys
import numpy as np
import bnncl.device
from bnncl.device import Model
t1 = time.perf_counter()
image = np.load(sys.argv[2])
label = Model.load(sys.argv[1]).predict(image)
t2 = time.perf_counter()
print(json.dumps({"import_seconds": t1 - t0, "load_predict_seconds": t2 - t1, "label": int(label[0]),
                  "torch_imported": "torch" in sys.modules, "numba_imported": "numba" in sys.modules}))
"""


def run_json(code: str, args: list) -> tuple[dict, float]:
    t0 = perf()
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    wall = perf() - t0
    if proc.returncode:
        raise RuntimeError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def cpu_flags() -> dict:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {f: f in flags for f in ("popcnt", "avx2", "avx512f", "avx512_vpopcntdq")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/bench/pretrain/model.pt")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default="runs/bench/inference.json")
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats (a smoke run)")
    args = ap.parse_args()

    seconds, rounds = (0.15, 2) if args.quick else (1.5, 6)  # per measurement, interleaved in rounds
    peak_seconds, peak_repeats = (0.1, 2) if args.quick else (0.3, 3)
    torch.set_num_threads(2)
    threads = cruntime.get_num_threads()  # the packed backend's C kernels
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # the popcount peak's
    t_start = perf()
    tmp = Path(tempfile.mkdtemp(prefix="bnncl-bench-"))  # model file, random checkpoint
    atexit.register(shutil.rmtree, tmp, True)
    result = {"quick": args.quick, "machine": machine_info()}

    # -- 1. set-up and sizes -------------------------------------------------------------------------------------
    ckpt = Path(args.checkpoint)
    random_model = not ckpt.is_file()
    if random_model:
        ckpt = tmp / "random.pt"
        random_checkpoint(ckpt)
    model_file = tmp / "model.bnn"
    export_checkpoint(ckpt, model_file)
    m = Model.load(model_file)
    model, _ = load_model(ckpt)
    model_pre = prebinarize(model)
    frozen, _ = model.split(m.lr_layer)
    frozen_pre, _ = model_pre.split(m.lr_layer)
    try:
        test = load_idx_dataset(args.data, "test")
        images, image_source = test.x[:max(BATCHES)], f"Fashion-MNIST test images ({args.data})"
    except Exception as e:  # noqa: BLE001 - any missing/corrupt data: random pixels time the same
        images = np.random.default_rng(0).integers(0, 256, (max(BATCHES), *m.input_shape), dtype=np.uint8)
        image_source = f"random uint8 images (Fashion-MNIST not readable: {e})"

    sizes = {"model_file": model_file.stat().st_size, "checkpoint": ckpt.stat().st_size,
             "fp32_state_dict": state_dict_fp32_bytes(model)}
    sizes["model_file_arrays"] = sum(a.nbytes for a in read_model_file(model_file)[1].values())
    sizes["checkpoint_over_model_file"] = sizes["checkpoint"] / sizes["model_file"]
    sizes["fp32_over_model_file"] = sizes["fp32_state_dict"] / sizes["model_file"]
    result.update(checkpoint=str(args.checkpoint), random_model=random_model, images=image_source, sizes=sizes,
                  model=m.describe(), lr_layer=m.lr_layer)

    print(f"machine: {describe_machine(result['machine'])}; packed backend: the C kernels "
          f"({cruntime.build_path()} path, {threads} threads); numba {numba.__version__} (the popcount peak, "
          f"{numba.get_num_threads()} threads), "
          f"numpy {np.__version__}{'; QUICK run (few repeats)' if args.quick else ''}")
    if random_model:
        print(f"NOTE: {args.checkpoint} does not exist: a randomly initialized fmnist model (seed 0, random BN "
              "statistics) "
              "is used; speed does not depend on the weight values.")
    else:
        print(f"checkpoint: {args.checkpoint}")
    print(f"model: {m.describe()}")
    print(f"images: {image_source}\n")

    print("## 1. Sizes\n")
    table(["file", "bytes", "size", "vs model file"], [
        ["model file (.bnn, exported)", f"{sizes['model_file']:,}", kib(sizes["model_file"]), "1.0x"],
        ["  of which array payload", f"{sizes['model_file_arrays']:,}", kib(sizes["model_file_arrays"]),
         f"{sizes['model_file_arrays'] / sizes['model_file']:.2f}x"],
        [f"checkpoint ({'random model, no optimizer' if random_model else ckpt.name})", f"{sizes['checkpoint']:,}",
         kib(sizes["checkpoint"]), f"{sizes['checkpoint_over_model_file']:.1f}x"],
        ["fp32 state dict (float32 tensors)", f"{sizes['fp32_state_dict']:,}", kib(sizes["fp32_state_dict"]),
         f"{sizes['fp32_over_model_file']:.1f}x"],
    ])

    # -- sanity: the four implementations compute the same network -------------------------------------------------
    x64 = images[:64]
    with torch.inference_mode():
        ref = model(normalize_tensor(torch.from_numpy(x64))).numpy()
        ref_pre = model_pre(normalize_tensor(torch.from_numpy(x64))).numpy()
        lat_ref = frozen(normalize_tensor(torch.from_numpy(x64))).permute(0, 2, 3, 1).numpy()
    check = {
        "packed_vs_torch_logits_max_abs": float(np.abs(m.logits(x64, "packed") - ref).max()),
        "float_vs_torch_logits_max_abs": float(np.abs(m.logits(x64, "float") - ref).max()),
        "prebin_vs_torch_logits_max_abs": float(np.abs(ref_pre - ref).max()),
        "packed_vs_torch_latent_max_abs": float(np.abs(m.latent(x64, "packed").real - lat_ref).max()),
        "argmax_agreement_packed_torch": float((m.logits(x64, "packed").argmax(1) == ref.argmax(1)).mean()),
    }
    result["consistency"] = check
    print("consistency at batch 64: max |logits - torch| packed {packed_vs_torch_logits_max_abs:.2e}, float "
          "{float_vs_torch_logits_max_abs:.2e}, torch pre-binarized {prebin_vs_torch_logits_max_abs:.2e}; "
          "max |latent - torch| packed {packed_vs_torch_latent_max_abs:.2e}; argmax agreement packed/torch "
          "{argmax_agreement_packed_torch:.0%}\n".format(**check))

    # -- 2. end to end -------------------------------------------------------------------------------------------
    def torch_call(net, x):
        with torch.inference_mode():
            return net(normalize_tensor(torch.from_numpy(x)))

    speed = {}
    for part in ("frozen", "whole"):
        for bs in BATCHES:
            x = images[:bs]
            if part == "frozen":
                fns = {"packed": lambda x=x: m.latent(x, "packed"), "torch": lambda x=x: torch_call(frozen, x),
                       "torch_prebin": lambda x=x: torch_call(frozen_pre, x), "float": lambda x=x: m.latent(x, "float")}
            else:
                fns = {"packed": lambda x=x: m.logits(x, "packed", batch_size=bs),
                       "torch": lambda x=x: torch_call(model, x), "torch_prebin": lambda x=x: torch_call(model_pre, x),
                       "float": lambda x=x: m.logits(x, "float", batch_size=bs)}
            speed[f"{part}/{bs}"] = compare(fns, seconds, rounds)
    result["speed"] = speed

    print(f"## 2. End to end (min per-call time; {rounds} interleaved rounds, ~{seconds:g} s per implementation)\n")
    rows = []
    for key, res in speed.items():
        part, bs = key.split("/")
        t_packed = res["packed"]["seconds"]
        for k in IMPLS:
            t = res[k]["seconds"]
            what = f"frozen part (stem..{m.frozen_ops[-1].name})" if part == "frozen" else "whole network (logits)"
            rows.append([what,
                         bs, LABELS[k], f"{t * 1e3:.3f}", f"{int(bs) / t:,.0f}", res[k]["calls"],
                         "–" if k == "packed" else f"{t / t_packed:.1f}x"])
    table(["part", "batch", "implementation", "ms / batch", "images/s", "calls", "packed speedup"], rows, "lrlrrrr")

    # -- 3. per layer --------------------------------------------------------------------------------------------
    def torch_layers(net, x, acc):
        with torch.inference_mode():
            h = normalize_tensor(torch.from_numpy(x))
            for name, layer in net.layers.items():
                t0 = perf()
                h = layer(h)
                acc[name] = acc.get(name, 0.0) + perf() - t0

    layers = {}
    for bs in BATCHES:
        x = images[:bs]
        layers[bs] = per_layer({
            "packed": lambda acc, x=x: m.logits(x, "packed", batch_size=bs, timings=acc),
            "torch": lambda acc, x=x: torch_layers(model, x, acc),
            "torch_prebin": lambda acc, x=x: torch_layers(model_pre, x, acc),
            "float": lambda acc, x=x: m.logits(x, "float", batch_size=bs, timings=acc),
        }, seconds, rounds)
    result["per_layer"] = {str(bs): v for bs, v in layers.items()}
    frozen_names = {op.name for op in m.frozen_ops}
    print(f"## 3. Per layer (ms per call: the mean over repeats of the best of {rounds} rounds)\n")
    for bs in BATCHES:
        res = layers[bs]
        names = list(res["packed"])
        rows = []
        for name in names + ["total"]:
            v = {k: (sum(res[k].values()) if name == "total" else res[k].get(name, 0.0)) for k in IMPLS}
            tb = min(v["torch"], v["torch_prebin"])
            tag = "" if name == "total" else (" (frozen)" if name in frozen_names else "")
            share = v["packed"] / sum(res["packed"].values())
            rows.append([f"**{name}**" if name == "total" else name + tag, f"{v['packed'] * 1e3:.3f}", f"{share:.0%}",
                         f"{v['float'] * 1e3:.3f}", f"{v['torch'] * 1e3:.3f}", f"{v['torch_prebin'] * 1e3:.3f}",
                         f"{tb / v['packed']:.1f}x" if v["packed"] > 0 else "–"])
        print(f"batch {bs}:\n")
        table(["layer", "packed", "packed share", "NumPy float", "torch", "torch pre-bin", "faster torch / packed"],
              rows)

    # -- 4. binary conv throughput vs the popcount peak ------------------------------------------------------------
    # on one thread, both: the C kernel's split over threads depends on the call's size (a batch-64 conv of these
    # layers is one chunk), so a peak on more threads would be no measure of the kernel
    cruntime.set_num_threads(1)
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    peak_before = popcount_peak(rng, peak_seconds, peak_repeats)
    shapes = block_input_shapes(m)
    nb = max(BATCHES)
    conv_rows = []
    for op in m.binary_layers():
        h, w = shapes[op.name]
        nw = words_for(op.cin)
        xp = random_packed(rng, (nb, h, w, nw), op.cin)

        def f(xp=xp, op=op):
            return K.bconv(xp, op.weight_kernel, op.cin, op.stride, 1, w_is_kernel_layout=True)

        out = f()
        words = out.shape[0] * out.shape[1] * out.shape[2] * op.cout * 9 * nw
        t = compare({"bconv": f}, seconds, rounds)["bconv"]["seconds"]
        conv_rows.append({"name": op.name, "input": [nb, h, w, op.cin], "output": list(out.shape), "stride": op.stride,
                          "words_per_pixel": nw, "words": words, "weights": op.cout * op.cin * 9, "seconds": t,
                          "gwords_per_s": words / t / 1e9})
    peak_after = popcount_peak(rng, peak_seconds, peak_repeats)
    cruntime.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    peak = max(peak_before["gwords_per_s"], peak_after["gwords_per_s"])
    widest = max(r["output"][-1] for r in conv_rows)
    for r in conv_rows:
        r["percent_of_peak"] = 100 * r["gwords_per_s"] / peak
        r["large"] = r["output"][-1] == widest
        r["block_seconds_b64"] = layers[nb]["packed"].get(r["name"])
    total_words, total_t = sum(r["words"] for r in conv_rows), sum(r["seconds"] for r in conv_rows)
    large = [r for r in conv_rows if r["large"]]
    result["popcount"] = {
        "convention": "one word = 64 binary MACs (xor + popcount of 64 sign bits); binary ops = 2 x MACs",
        "peak_before": peak_before, "peak_after": peak_after, "peak_gwords_per_s": peak, "layers": conv_rows,
        "all_layers_percent_of_peak": 100 * total_words / total_t / 1e9 / peak,
        "large_layers": [r["name"] for r in large],
        "large_layers_percent_of_peak":
            100 * sum(r["words"] for r in large) / sum(r["seconds"] for r in large) / 1e9 / peak,
    }
    pc = result["popcount"]
    print(f"## 4. Binary conv throughput vs the xor-popcount peak (batch {nb}, random packed inputs)\n")
    print("Convention: a word is 64 sign bits; one xor + popcount of a word = 64 binary MACs (128 binary ops). "
          "Words per layer = N * Ho * Wo * Cout * 9 * words per input pixel (padding words included: the kernel "
          "processes them).\n")
    table(["peak run", "loop", "words/thread", "sweeps", "s", "Gwords/s"],
          [[tag, r["form"], r["words_per_thread"], f"{r['sweeps']:,}", f"{r['seconds']:.3f}",
            f"{r['gwords_per_s']:.2f}"]
           for tag, p in (("before layers", peak_before), ("after layers", peak_after)) for r in p["rows"]])
    print(f"peak ({peak_before['threads']} threads, max of before {peak_before['gwords_per_s']:.2f} and after "
          f"{peak_after['gwords_per_s']:.2f}): {peak:.2f} Gwords/s = {peak * 64 / 1e3:.2f} binary TMAC/s\n")
    table(["layer", "input NHWC", "output", "stride", "Mwords", "ms", "Gwords/s", "binary GMAC/s", "% of peak",
           "bconv / block time"],
          [[r["name"] + (" (large)" if r["large"] else ""), "x".join(map(str, r["input"])),
            "x".join(map(str, r["output"])),
            r["stride"], f"{r['words'] / 1e6:.2f}", f"{r['seconds'] * 1e3:.3f}", f"{r['gwords_per_s']:.2f}",
            f"{r['gwords_per_s'] * 64:,.0f}", f"{r['percent_of_peak']:.0f} %",
            f"{r['seconds'] / r['block_seconds_b64']:.0%}" if r["block_seconds_b64"] else "–"] for r in conv_rows]
          + [["**all binary convs**", "", "", "", f"{total_words / 1e6:.2f}", f"{total_t * 1e3:.3f}",
              f"{total_words / total_t / 1e9:.2f}", f"{total_words / total_t / 1e9 * 64:,.0f}",
              f"{pc['all_layers_percent_of_peak']:.0f} %", ""]])
    print(f"large = the widest layers (Cout {widest}): {', '.join(pc['large_layers'])}; their combined throughput is "
          f"{pc['large_layers_percent_of_peak']:.0f} % of peak. 'bconv / block time': the conv's share of the block's "
          f"packed time at batch {nb} in section 3 (the rest: epilogue, shortcut pooling, allocation).\n")

    # -- 5. CPU facts ---------------------------------------------------------------------------------------------
    flags = cpu_flags()
    cpu = {"describe_machine": describe_machine(result["machine"]), "model_name": cpu_name(), "flags": flags,
           "c_kernels_path": cruntime.build_path(), "c_threads": threads, "numba_threads": numba.get_num_threads()}
    result["cpu"] = cpu
    print("## 5. CPU and the C kernels\n")
    print(f"machine: {cpu['describe_machine']}")
    print(f"CPU model (/proc/cpuinfo): {cpu['model_name']}; flags: "
          + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in flags.items()))
    print(f"C kernels: the {cpu['c_kernels_path']} path (chosen when the package was built: setup.py, BNNCL_SIMD), "
          f"{threads} threads (cruntime.set_num_threads); section 4's convs and popcount peak on one thread\n")

    # -- 6. start-up -------------------------------------------------------------------------------------------------
    np.save(tmp / "image.npy", images[:1])
    startup = []
    for label in ("1st process", "2nd process", "3rd process"):
        res, wall = run_json(STARTUP_SCRIPT, [model_file, tmp / "image.npy"])
        startup.append({"run": label, "wall_seconds": wall, **res})
    result["startup"] = startup
    print("## 6. Start-up: `import bnncl.device; Model.load(path).predict(one image)` in a fresh process\n")
    table(["run", "process wall s", "import s", "load + first predict s", "torch imported", "numba imported"],
          [[r["run"], f"{r['wall_seconds']:.2f}", f"{r['import_seconds']:.2f}", f"{r['load_predict_seconds']:.2f}",
            "yes" if r["torch_imported"] else "no", "yes" if r["numba_imported"] else "no"] for r in startup])

    # -- summary -------------------------------------------------------------------------------------------------
    summary = {}
    for bs in BATCHES:
        res = speed[f"frozen/{bs}"]
        base = min(("torch", "torch_prebin"), key=lambda k: res[k]["seconds"])
        summary[f"frozen_speedup_b{bs}"] = {"vs": base, "speedup": res[base]["seconds"] / res["packed"]["seconds"]}
    summary["large_layers_percent_of_peak"] = pc["large_layers_percent_of_peak"]
    summary["size_ratio_checkpoint_over_model_file"] = sizes["checkpoint_over_model_file"]
    summary["size_ratio_fp32_over_model_file"] = sizes["fp32_over_model_file"]
    summary["targets"] = TARGETS
    summary["total_seconds"] = perf() - t_start
    result["summary"] = summary

    def verdict(v, target):
        return "met" if v >= target else "NOT met"

    print("## Summary\n")
    for bs in BATCHES:
        s = summary[f"frozen_speedup_b{bs}"]
        print(f"- frozen part, batch {bs}: packed is {s['speedup']:.1f}x faster than the faster torch baseline "
              f"({LABELS[s['vs']]}) (target >= {TARGETS['speedup']:g}x: {verdict(s['speedup'], TARGETS['speedup'])})")
    print(f"- large binary layers ({', '.join(pc['large_layers'])}): {pc['large_layers_percent_of_peak']:.0f} % of the "
          f"popcount peak (target >= {TARGETS['peak_percent']:g} %: "
          f"{verdict(pc['large_layers_percent_of_peak'], TARGETS['peak_percent'])}); all binary convs together: "
          f"{pc['all_layers_percent_of_peak']:.0f} %")
    fb = [r for r in conv_rows if r["name"] in frozen_names and r["block_seconds_b64"]]
    frozen_t = sum(layers[nb]["packed"][n] for n in frozen_names)
    bconv_share = sum(r["seconds"] for r in fb) / sum(r["block_seconds_b64"] for r in fb)
    summary["frozen_b64_bconv_share_of_blocks"] = bconv_share
    summary["frozen_b64_stem_share"] = layers[nb]["packed"][m.frozen_ops[0].name] / frozen_t
    print(f"- where the packed frozen part spends its time at batch {nb}: the stem "
          f"{summary['frozen_b64_stem_share']:.0%}; in the binary blocks the xor-popcount convs are only "
          f"{bconv_share:.0%} of the "
          "blocks' time (the rest: epilogue, shortcut pooling, allocation)")
    print(f"- model file {kib(sizes['model_file'])} vs checkpoint {kib(sizes['checkpoint'])}: "
          f"{sizes['checkpoint_over_model_file']:.1f}x smaller (target >= {TARGETS['size_ratio']:g}x: "
          f"{verdict(sizes['checkpoint_over_model_file'], TARGETS['size_ratio'])}); vs the fp32 state dict: "
          f"{sizes['fp32_over_model_file']:.1f}x")
    print(f"- total {summary['total_seconds']:.0f} s")

    print(f"\nsaved {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
