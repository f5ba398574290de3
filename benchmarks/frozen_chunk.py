"""Frozen part in chunks: what running the frozen part on fewer images at a time (``Learner(frozen_chunk=N)``,
``bnncl device learn --frozen-chunk N``) saves in peak activation memory and costs in time, on the demo model
(runs/demo/model.bnn) and the demo stream (configs/demo.toml), device settings (8/16 head-only, 8/16/8 multi-layer,
1-bit replay, packed backend). The latents are the same bit for bit whatever the chunk (tests hold it), so accuracy
does not move.

For each chunk size (the baseline: the whole minibatch of 50 new images), in one run:

1. memory: the frozen part's peak (its largest op, input + output, measured on a minibatch) and the step's peak
   activations of ``Learner.nbytes()`` (frozen peak + the training step's arrays, measured by tracemalloc);
2. time: the frozen part on a minibatch (``Learner.latents``), every chunk size interleaved minibatch by minibatch,
   min and median; and whole learning steps (``Learner.learn``'s own ``step_seconds``): every learner learns the same
   small experiences in turn (interleaved experience by experience). Ratios compare minima (the figure a shared
   machine disturbs least).

Usage: .venv/bin/python benchmarks/frozen_chunk.py [--config head|multi|both] [--chunks 25 10 5 2 1]
       [--repeats 40] [--experiences 6] [--json runs/bench/frozen_chunk.json]
About 2 minutes on 2 cores (one kernel thread: the steadier choice on a shared machine).
"""

import argparse
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bnncl.data.idx import load_idx_dataset  # noqa: E402
from bnncl.device import Learner, cruntime  # noqa: E402
from common import demo_options, describe_machine, kib, machine_info, table, write_json  # noqa: E402

perf = __import__("time").perf_counter


def run(config: str, args, images, labels) -> dict:
    opts = demo_options(config, 8)
    chunks = [None, *args.chunks]  # None: the whole minibatch, the baseline
    learners = {c: Learner.open(args.model, None, opts, frozen_chunk=c) for c in chunks}
    name = {c: f"{opts.batch_size} (whole minibatch)" if c is None else str(c) for c in chunks}
    rng = np.random.default_rng(0)

    # time: the frozen part on a minibatch, interleaved (the order rotating so that all see the same load)
    for L in learners.values():
        L.latents(images[:opts.batch_size])  # the library loaded before timing
    frozen = {c: [] for c in chunks}
    for i in range(args.repeats):
        x = images[rng.choice(len(images), opts.batch_size, replace=False)]
        for c in chunks[i % len(chunks):] + chunks[:i % len(chunks)]:
            t0 = perf()
            learners[c].latents(x)
            frozen[c].append(perf() - t0)
    # whole learning steps: the same small experiences for every learner, in turn
    size, warm = 4 * opts.batch_size, {}
    for e in range(args.experiences + 1):  # the first experience of each learner is a warm-up, not counted
        idx = rng.choice(len(images), size, replace=False)
        for c in chunks[e % len(chunks):] + chunks[:e % len(chunks)]:
            learners[c].learn(images[idx], labels[idx])
            warm.setdefault(c, len(learners[c].step_seconds))
    steps = {c: np.array(L.step_seconds[warm[c]:]) for c, L in learners.items()}

    # ratios of minima: a shared machine disturbs them least
    base_frozen, base_step = min(frozen[None]), steps[None].min()
    rows, out = [], {}
    for c in chunks:
        nb = learners[c].nbytes()
        out[name[c]] = {"frozen_peak_bytes": learners[c].frozen_peak_bytes, "peak_activations": nb["peak_activations"],
                        "total_bytes": nb["total"], "frozen_ms_min": 1e3 * min(frozen[c]),
                        "frozen_ms_median": 1e3 * float(np.median(frozen[c])),
                        "step_ms_min": 1e3 * float(steps[c].min()), "step_ms_median": 1e3 * float(np.median(steps[c])),
                        "steps": len(steps[c])}
        r = out[name[c]]
        rows.append([name[c], kib(r["frozen_peak_bytes"]), kib(r["peak_activations"]), kib(r["total_bytes"]),
                     f"{r['frozen_ms_min']:.2f} / {r['frozen_ms_median']:.2f}",
                     f"{min(frozen[c]) / base_frozen:.2f}x",
                     f"{r['step_ms_min']:.2f} / {r['step_ms_median']:.2f}", f"{steps[c].min() / base_step:.2f}x"])
    print(f"### {config}: {'the head alone' if config == 'head' else 'block5, block6, the pool and the head'} "
          f"(q_f 8, q_b 16{', q_bin 8' if config == 'multi' else ''}), {opts.batch_size} new + "
          f"{opts.replay_batch} replayed per step\n")
    table(["frozen chunk (images)", "frozen part peak", "step peak activations", "total memory",
           "frozen part ms (min / median)", "vs whole (min)", "learning step ms (min / median)",
           "vs whole (min)"], rows)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=("head", "multi", "both"), default="both")
    ap.add_argument("--chunks", type=int, nargs="+", default=[25, 10, 5, 2, 1])
    ap.add_argument("--repeats", type=int, default=40, help="timed minibatches of the frozen part per chunk size")
    ap.add_argument("--experiences", type=int, default=6, help="small experiences (200 images) each learner learns")
    ap.add_argument("--model", default="runs/demo/model.bnn")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    train = load_idx_dataset(args.data, "train")
    images, labels = train.x.reshape(len(train.y), 28, 28, 1), train.y.astype(np.int64)
    machine = machine_info()
    cruntime.set_num_threads(int(os.environ["NUMBA_NUM_THREADS"]))  # the C kernels' threads as numba's
    print(f"machine: {describe_machine(machine)}; kernel threads {os.environ['NUMBA_NUM_THREADS']} (numba, C); "
          f"load average {os.getloadavg()[0]:.1f}\n")
    configs = ["head", "multi"] if args.config == "both" else [args.config]
    result = {"machine": machine, "load_average": os.getloadavg()[0],
              "configs": {c: run(c, args, images, labels) for c in configs}}
    if args.json:
        print(f"saved {write_json(args.json, result)}")


if __name__ == "__main__":
    main()
