"""Continual-learning benchmark on Fashion-MNIST (torch simulation): NC 5x2 and a NICv2-style stream.

For each stream: the backbone is pretrained on experience 0 (twice: with the binary boundary at block5, where 1-bit
latent replay is exact, and without it, where 1-bit replay stores sign(x + o) for block5's shift o and decodes it as
sign(x + o) * s - o with a per-channel scale s), then every strategy runs over the whole stream. Prints one markdown \
table (BENCHMARKS.md holds the latest) and the two checks of issue 3:
ar1 - naive on NC, and 1-bit vs float32 replay at the same number of patterns.

Usage: python benchmarks/continual.py [--out runs/bench/continual] [--streams nc nic] [--epochs N] [--replay-size M]
Each configuration is a `bnncl learn` run; its directory holds result.json, report.md and the figures.
"""

import argparse
import time
from pathlib import Path

from bnncl.simulation.experiment import report_markdown, run_experiment
from common import describe_machine, machine_info, write_json

STREAMS = {
    "nc": {"type": "nc", "n_experiences": 5},
    "nic": {"type": "nic", "first": 2, "n_batches": 40},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench/continual")
    ap.add_argument("--streams", nargs="+", default=list(STREAMS), choices=STREAMS)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4, help="epochs per experience")
    ap.add_argument("--replay-size", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage-only", action="store_true",
                    help="only the replay-storage comparison (ar1 1-bit with the binary boundary; ar1 1-bit and "
                         "float32 without it), e.g. to repeat it with another --seed")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    out = Path(args.out)
    learn = {"epochs": args.epochs, "replay_size": args.replay_size}
    results, t_start = [], time.perf_counter()
    for name in args.streams:
        for boundary in ("block5", None):
            tag = "binary-boundary" if boundary else "real-boundary"
            base = {"stream": STREAMS[name], "seed": args.seed, "learn": learn,
                    "pretrain": {"epochs": args.pretrain_epochs, **({"binary_boundary": boundary} if boundary else {})}}
            strategies = ["naive", "cwr", "ar1", "joint"] if boundary and not args.storage_only else ["ar1"]
            first = {**base, "strategies": strategies, "out": str(out / f"{name}-{tag}-bits")}
            res = run_experiment(first, progress=not args.quiet)
            for r in res["runs"]:
                r["label"] = f"{r['strategy']}{' 1-bit' if r['strategy'] == 'ar1' else ''} ({tag})"
            results.append(res)
            ckpt = res["backbone"]["checkpoint"]
            if boundary and args.storage_only:
                continue
            res = run_experiment({**base, "strategies": ["ar1"], "checkpoint": ckpt,
                                  "out": str(out / f"{name}-{tag}-float32"),
                                  "learn": {**learn, "replay_storage": "float32"}}, progress=not args.quiet)
            res["runs"][0]["label"] = f"ar1 float32 ({tag})"
            results.append(res)
            # the minibatch mix: AR1*'s proportional split instead of 50 new + 128 replayed
            if boundary and name == "nc" and not args.storage_only:
                res = run_experiment({**base, "strategies": ["ar1"], "checkpoint": ckpt,
                                      "out": str(out / f"{name}-{tag}-proportional"),
                                      "learn": {**learn, "replay_mix": "proportional", "batch_size": 128}},
                                     progress=not args.quiet)
                res["runs"][0]["label"] = f"ar1 1-bit, proportional mix of 128 ({tag})"
                results.append(res)
    table = report_markdown(results)
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}; total {(time.perf_counter() - t_start) / 60:.1f} min")
    print(table, end="")
    for name in args.streams:
        runs = {r["label"]: r for res in results for r in res["runs"]
                if r["stream"]["name"].startswith(STREAMS[name]["type"])}
        naive, ar1 = runs.get("naive (binary-boundary)"), runs.get("ar1 1-bit (binary-boundary)")
        if naive and ar1:
            print(f"{name}: ar1 1-bit - naive = {(ar1['final_accuracy'] - naive['final_accuracy']) * 100:+.1f} pp")
        for tag in ("binary-boundary", "real-boundary"):
            b, f = runs.get(f"ar1 1-bit ({tag})"), runs.get(f"ar1 float32 ({tag})")
            if b and f:
                print(f"{name} {tag}: 1-bit - float32 replay = "
                      f"{(b['final_accuracy'] - f['final_accuracy']) * 100:+.2f} pp, "
                      f"memory {f['bytes']['replay_memory'] / b['bytes']['replay_memory']:.1f}x smaller")
        b, f = runs.get("ar1 1-bit (binary-boundary)"), runs.get("ar1 float32 (real-boundary)")
        if b and f:
            print(f"{name}: 1-bit replay with the binary boundary - float32 replay without it = "
                  f"{(b['final_accuracy'] - f['final_accuracy']) * 100:+.2f} pp, "
                  f"memory {f['bytes']['replay_memory'] / b['bytes']['replay_memory']:.1f}x smaller")
    write_json(out / "summary.json", {"machine": machine, "table": table, "results": results})


if __name__ == "__main__":
    main()
