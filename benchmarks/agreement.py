"""Agreement of the on-device learner with the torch simulation: the same stream, seed and settings, final accuracy.

For each setting, three runs over the demo stream (configs/demo.toml; backbone runs/demo/pretrain/model.pt, its model
file runs/demo/model.bnn, exported with the latent weights when a setting needs them):

* the simulation (``bnncl learn``'s ``run_stream``) with docs/method.md's quantizer grid (the float form, \
``q_grid affine``),
* the simulation on the integer form's grid (``q_grid integer``, what the device computes with),
* the device learner (``bnncl.device.Learner``: bit-packed frozen part, integer arithmetic, 1-bit replay).

Both sides draw the same shuffles and replayed patterns (NumPy generators with the same seeds), so the simulation on
the integer grid and the device differ only by float rounding (integer sums rescaled vs float32 sums) and CWR*'s rows
(float64 in the simulation, float32 on the device).

    python benchmarks/agreement.py [--settings head-8-16 cwr-8-16 multi-8-16-8] [--epochs N] [--json PATH]

Settings: ``head-8-16`` (AR1* on the head, 1-bit replay of the pooled features, q_f 8 / q_b 16), ``cwr-8-16`` (CWR*
alone, work A), ``head-32`` and ``cwr-32`` (fp32 on both sides), ``multi-8-16-8`` (work B: block5, block6 and the
head trained, q_bin 8, re-binarized update), ``multi-8-16-8-plain`` (the plain update, stochastic rounding: needs the
latent weights in the model file). The multi-layer settings take long on 2 cores: ``--epochs 1`` shortens every one.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bnncl.checkpoint import load_model
from bnncl.core.options import LearnOptions
from bnncl.device import Learner, Model
from bnncl.simulation import experiment
from bnncl.simulation.run import run_stream
from common import describe_machine, machine_info, write_json

SETTINGS = {
    "head-8-16": dict(strategy="ar1", lr_layer="head", q_f=8, q_b=16),
    "cwr-8-16": dict(strategy="cwr", lr_layer="head", q_f=8, q_b=16),
    "head-32": dict(strategy="ar1", lr_layer="head", replay_storage="bits"),
    "cwr-32": dict(strategy="cwr", lr_layer="head"),
    "multi-8-16-8": dict(strategy="ar1", q_f=8, q_b=16, q_bin=8),
    "multi-8-16-8-plain": dict(strategy="ar1", q_f=8, q_b=16, q_bin=8, q_bin_update="plain", q_rounding="stochastic"),
}
CHECKPOINT = "runs/demo/pretrain/model.pt"


def model_file(latent: bool) -> str:
    path = "runs/demo/model_latent.bnn" if latent else "runs/demo/model.bnn"
    if not Path(path).is_file():
        cmd = ([sys.executable, "-m", "bnncl.cli", "export", CHECKPOINT, "--out", path]
               + (["--latent-weights"] if latent else []))
        subprocess.run(cmd, check=True)
    return path


def device_run(path: str, stream, options: LearnOptions, progress: bool) -> tuple[float, list[float], float]:
    learner = Learner(Model.load(path), options)
    accs = []
    for exp in tqdm(stream.experiences, desc="device", disable=not progress, leave=False):
        learner.learn(exp.data.x, exp.data.y)
        accs.append(float(np.mean(learner.predict(stream.test.x, batch_size=256) == stream.test.y)))
    return accs[-1], accs, float(np.median(learner.step_seconds))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=["head-8-16", "cwr-8-16"], choices=SETTINGS)
    ap.add_argument("--epochs", type=int, help="epochs per experience (default: the config's, 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if not Path(CHECKPOINT).is_file():
        sys.exit(f"{CHECKPOINT} is missing: run make demo first")
    cfg = experiment.validate({**experiment.load_config("configs/demo.toml"), "seed": args.seed})
    stream, _ = experiment.build_stream(cfg)
    model, _ = load_model(CHECKPOINT)
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}\nstream: {stream.describe()}\n")
    print("| setting | LR layer | epochs | simulation (float grid) | simulation (integer grid) | device | "
          "device - sim (integer grid) | device - sim (float grid) | device step (median) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name in args.settings:
        learn = {**cfg["learn"], **SETTINGS[name], **({"epochs": args.epochs} if args.epochs else {})}
        opts = LearnOptions(**{"seed": args.seed, **learn})
        sims = {}
        for grid in ("affine", "integer"):
            if opts.q_f == 32 and grid == "integer":
                sims[grid] = sims["affine"]  # no quantizer: one run
                continue
            r = run_stream(copy.deepcopy(model), stream, LearnOptions(**{**opts.to_dict(), "q_grid": grid}),
                           progress=not args.quiet)
            sims[grid] = r["final_accuracy"]
        latent = opts.q_bin_update == "plain" and opts.lr_layer != "head"
        dev, dev_accs, step = device_run(model_file(latent), stream, opts, not args.quiet)
        row = {"setting": name, "options": opts.to_dict(), "simulation_affine": sims["affine"],
               "simulation_integer": sims["integer"], "device": dev, "device_accuracy": dev_accs,
               "device_step_seconds_median": step}
        rows.append(row)
        print(f"| {name} | {opts.lr_layer or 'block5'} | {opts.epochs} | {100 * sims['affine']:.2f} % | "
              f"{100 * sims['integer']:.2f} % | {100 * dev:.2f} % | {100 * (dev - sims['integer']):+.2f} pp | "
              f"{100 * (dev - sims['affine']):+.2f} pp | {1e3 * step:.0f} ms |", flush=True)
    if args.json:
        write_json(args.json, {"machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
