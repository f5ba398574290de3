"""Pretraining benchmark: the default backbone trained jointly on all of Fashion-MNIST.

Prints one table row: architecture, epochs, test accuracy, wall time, training images/s, deployed size vs fp32.
Usage: python benchmarks/pretrain.py [--epochs N] [--out DIR] [--preset NAME]
"""

import argparse
import time
from pathlib import Path

from bnncl.models.summary import summarize
from bnncl.training.pretrain import PretrainOptions, pretrain
from common import describe_machine, machine_info, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench/pretrain")
    args = ap.parse_args()

    out = Path(args.out)
    t0 = time.perf_counter()
    model, result = pretrain(PretrainOptions(epochs=args.epochs, preset=args.preset, seed=args.seed,
                                             out=str(out / "model.pt")))
    wall = time.perf_counter() - t0
    s = summarize(model)["totals"]
    train_s = sum(h["seconds"] for h in result["history"])
    row = {
        "architecture": result["architecture"],
        "epochs": args.epochs,
        "test_accuracy": result["test"]["accuracy"],
        "wall_seconds": wall,
        "train_images_per_second": result["train_images"] * args.epochs / train_s,
        "deployed_bytes": s["bytes_deployed"],
        "fp32_bytes": s["bytes_fp32"],
        "fp32_over_deployed": s["fp32_over_deployed"],
        "machine": machine_info(),
    }
    write_json(out / "result.json", {**row, "history": result["history"]})
    print(f"machine: {describe_machine(row['machine'])}")
    print(f"architecture: {row['architecture']}")
    print("| epochs | test accuracy | wall time | train images/s | deployed | fp32 copy | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {row['epochs']} | {row['test_accuracy']:.2%} | {wall / 60:.1f} min | "
          f"{row['train_images_per_second']:.0f} | {row['deployed_bytes'] / 1024:.1f} KiB | "
          f"{row['fp32_bytes'] / 1024:.1f} KiB | {row['fp32_over_deployed']:.1f}x |")


if __name__ == "__main__":
    main()
