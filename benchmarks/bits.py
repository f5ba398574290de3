"""The bit-width study of the hybrid-quantized learning step (docs/method.md §5), torch simulation.

For each stream, from a pretrained backbone: the fp32 run, then every (q_f, q_b) of the grid with q_b >= q_f; final
accuracy, the mean relative error of the quantized gradient against the float one per trained layer, and the bytes of
the trainable state. The frozen part never changes, so every run of a stream shares one cache of latents.

Variants: ``head`` (work A: CWR* on the head only, strategy cwr) and ``multi`` (work B: CWR* + 1-bit latent replay,
quantized back-propagation through the blocks above the LR layer, strategy ar1, q_bin = q_f). The fp32 run of each
variant is the plain autograd learner.

    python benchmarks/bits.py [--streams default nc] [--out runs/bench/bits] [--q-f 4 6 8 16 32] [--q-b 8 12 16 32]

Streams: ``default`` is make demo's (configs/demo.toml, backbone runs/demo/pretrain/model.pt); ``nc`` is NC 5x2 with
the backbone benchmarks/continual.py pretrained on its experience 0. A missing backbone is pretrained first.

A grid takes hours for the multi-layer variant; it can be run in pieces (``--q-f``/``--q-b`` subsets,
``--fp32-accuracy`` to skip a reference run already made) and the pieces put together with
``--merge DIR [DIR ...] --out DIR``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from bnncl.core.affine import NonFiniteError
from bnncl.core.plots import bit_width_heatmap
from bnncl.simulation import experiment
from bnncl.simulation.run import run_stream
from bnncl.simulation.strategy import Strategy
from common import describe_machine, machine_info, write_json

STREAMS = {
    "default": {"config": "configs/demo.toml", "checkpoint": "runs/demo/pretrain/model.pt"},
    "nc": {"config": None, "checkpoint": "runs/bench/continual/nc-binary-boundary-bits/pretrain/model.pt",
           "stream": {"type": "nc", "n_experiences": 5}},
}


def cache_latents():
    """Memoize Strategy.latents by input array: every run of a stream sees the same arrays and the same frozen part."""
    original, cache = Strategy.latents, {}

    def latents(self, x, batch_size=500):
        key = (id(x), x.shape)
        if key not in cache:
            cache[key] = (x, original(self, x, batch_size))  # keep x alive so its id is not reused
        return cache[key][1]

    Strategy.latents = latents
    return cache


def stream_and_model(name: str, args):
    spec = STREAMS[name]
    cfg = experiment.load_config(spec["config"]) if spec["config"] else {"stream": spec["stream"], "pretrain": {
        "epochs": 8, "binary_boundary": "block5"}}
    cfg = experiment.validate({**cfg, "strategies": ["cwr"], "out": str(Path(args.out) / name), "seed": args.seed,
                               **({"checkpoint": spec["checkpoint"]} if Path(spec["checkpoint"]).is_file() else {})})
    stream, held = experiment.build_stream(cfg)
    model, info = experiment.backbone_for(cfg, stream, progress=not args.quiet, held=held)
    return cfg, stream, model, info


def fp32_accuracy(stream_summary: dict, variant: str) -> float:
    """The fp32 reference of a variant: recorded by the run, or (summaries written before it was) implied by a row's
    difference to it."""
    if variant in stream_summary.get("fp32_accuracy", {}):
        return stream_summary["fp32_accuracy"][variant]
    row = next(r for r in stream_summary["rows"] if r["variant"] == variant and "final_accuracy" in r)
    return round(row["final_accuracy"] - row["vs_fp32_pp"] / 100, 6)


def merge_summaries(summaries: list[dict], sources: list[str]) -> dict:
    """Put pieces of one grid together: rows by (stream, variant, q_f, q_b), the last piece's row winning. Refused when
    the pieces differ in settings or in their fp32 reference (then their differences to fp32 do not compare)."""
    keys = ("ranges", "rounding", "q_bin_update", "q_bin")
    first = summaries[0]
    merged = {**{k: first.get(k) for k in ("machine", *keys)}, "streams": {}, "merged_from": list(sources)}
    for summary, source in zip(summaries, sources):
        # "q_bin" (the --q-bin policy) is recorded since the pieces could be merged; older summaries lack it
        differ = [k for k in keys if None not in (summary.get(k), first.get(k)) and summary[k] != first[k]]
        if differ:
            raise SystemExit(f"bits.py: {source}/summary.json has other settings than {sources[0]}/summary.json: "
                             + ", ".join(f"{k} {summary[k]} vs {first[k]}" for k in differ))
        for name, st in summary["streams"].items():
            into = merged["streams"].setdefault(name, {"stream": st["stream"], "backbone": st["backbone"], "rows": [],
                                                       "fp32_accuracy": {}})
            for variant in {r["variant"] for r in st["rows"]} & {"head", "multi"}:
                acc = fp32_accuracy(st, variant)
                known = into["fp32_accuracy"].setdefault(variant, acc)
                if abs(known - acc) > 1e-6:
                    raise SystemExit(f"bits.py: {source}/summary.json: the {variant} fp32 reference on {name} is "
                                     f"{100 * acc:.2f} %, not {100 * known:.2f} % as in the pieces before it: "
                                     "pieces of one grid must share it (--fp32-accuracy)")
            for row in st["rows"]:
                cell = (row["variant"], row["q_f"], row["q_b"])
                into["rows"] = [r for r in into["rows"] if (r["variant"], r["q_f"], r["q_b"]) != cell] + [row]
    for st in merged["streams"].values():
        st["rows"].sort(key=lambda r: (r["variant"], r["q_f"], r["q_b"]))
    return merged


def print_rows(summary: dict) -> None:
    print("| stream | variant | q_f | q_b | q_bin | final accuracy | vs fp32 | gradient rel. error | trainable state |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    for st in summary["streams"].values():
        for r in st["rows"]:
            if "diverged" in r:
                print(f"| {r['stream']} | {r['variant']} | {r['q_f']} | {r['q_b']} | {r['q_bin']} | "
                      f"diverged ({r['diverged']}) | | | |")
                continue
            err = ", ".join(f"{k} {v:.1e}" for k, v in r["gradient_relative_error"].items()) or "–"
            print(f"| {r['stream']} | {r['variant']} | {r['q_f']} | {r['q_b']} | {r['q_bin']} | "
                  f"{100 * r['final_accuracy']:.2f} % | {r['vs_fp32_pp']:+.2f} pp | {err} | "
                  f"{r['trainable_state_bytes']:,} B |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", nargs="+", default=list(STREAMS), choices=STREAMS)
    ap.add_argument("--q-f", nargs="+", type=int, default=[4, 6, 8, 16, 32])
    ap.add_argument("--q-b", nargs="+", type=int, default=[8, 12, 16, 32])
    ap.add_argument("--variants", nargs="+", default=["head", "multi"], choices=("head", "multi"))
    ap.add_argument("--ranges", default="dynamic", choices=("dynamic", "fixed"), help="head variant only")
    ap.add_argument("--rounding", default="nearest", choices=("nearest", "stochastic"))
    ap.add_argument("--q-bin-update", default="rebinarize", choices=("rebinarize", "plain"), help="multi variant only")
    ap.add_argument("--q-bin", default="q_f", help="multi variant: q_bin = q_f (default), q_b, or a number of bits")
    ap.add_argument("--handwritten-reference", action="store_true",
                    help="multi variant: also the hand-written backward at 32 bits "
                         "(the same update rule, no quantizer)")
    ap.add_argument("--out", default="runs/bench/bits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--replot", action="store_true", help="only redraw the heatmaps from OUT/summary.json")
    ap.add_argument("--merge", nargs="+", metavar="DIR",
                    help="only put the summaries of earlier runs (DIR/summary.json, pieces of one grid with the same "
                         "settings) together into OUT/summary.json and redraw the heatmaps; a cell in several DIRs: "
                         "the last one's")
    ap.add_argument("--fp32-accuracy", type=float, metavar="ACC",
                    help="the fp32 run's final accuracy (0-1) from an earlier run of the same stream and variant: "
                         "skip it")
    args = ap.parse_args()
    out = Path(args.out)
    if args.merge:
        summary = merge_summaries([json.loads((Path(d) / "summary.json").read_text()) for d in args.merge], args.merge)
        write_json(out / "summary.json", summary)
        print_rows(summary)
    if args.replot or args.merge:
        summary = json.loads((out / "summary.json").read_text())
        for name, st in summary["streams"].items():
            for variant in [v for v in ("head", "multi") if any(r["variant"] == v for r in st["rows"])]:
                grid = {(r["q_f"], r["q_b"]): r.get("final_accuracy", 0.0)
                        for r in st["rows"] if r["variant"] == variant}
                grid.setdefault((32, 32), fp32_accuracy(st, variant))
                qfs, qbs = sorted({k[0] for k in grid}), sorted({k[1] for k in grid})
                title = f"{'head only (work A)' if variant == 'head' else 'multi-layer (work B)'}, {st['stream']}"
                bit_width_heatmap(grid, qfs, qbs, title, out / f"heatmap_{variant}_{name}.png")
        return
    out.mkdir(parents=True, exist_ok=True)
    cache_latents()
    t_start = time.perf_counter()
    summary = {"machine": machine_info(), "ranges": args.ranges, "rounding": args.rounding,
               "q_bin_update": args.q_bin_update, "q_bin": args.q_bin, "streams": {}}
    print(f"machine: {describe_machine(summary['machine'])}; ranges {args.ranges}, rounding {args.rounding}\n")
    print("| stream | variant | q_f | q_b | q_bin | final accuracy | vs fp32 | gradient rel. error | trainable state | "
          "fp32 state |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for name in args.streams:
        cfg, stream, model, info = stream_and_model(name, args)
        summary["streams"][name] = {"stream": stream.name, "backbone": info, "rows": [], "fp32_accuracy": {}}
        for variant in args.variants:
            strategy = "cwr" if variant == "head" else "ar1"
            settings = [(32, 32)] + [(q_f, q_b) for q_f in args.q_f for q_b in args.q_b
                                     if q_b >= q_f and (q_f, q_b) != (32, 32)]
            if variant == "multi" and args.handwritten_reference:
                settings.insert(1, ("hand", 32))
            grid = {}
            if args.fp32_accuracy is not None:
                settings.remove((32, 32))
                grid[(32, 32)] = args.fp32_accuracy
                summary["streams"][name]["fp32_accuracy"][variant] = args.fp32_accuracy
            for q_f, q_b in settings:
                hand = q_f == "hand"
                q_f = 32 if hand else q_f
                q_bin = {"q_f": q_f, "q_b": q_b}.get(args.q_bin) or int(args.q_bin)
                learn = {**cfg["learn"], "q_f": q_f, "q_b": q_b, "q_bin": q_bin, "q_rounding": args.rounding,
                         "q_bin_update": args.q_bin_update, "handwritten": hand}
                if variant == "head":
                    learn["q_ranges"] = args.ranges
                try:
                    r = run_stream(copy.deepcopy(model), stream,
                                   experiment.learn_options({**cfg, "learn": learn}, strategy), progress=not args.quiet)
                except NonFiniteError as e:  # training diverged: a result too, named where it happened
                    print(f"| {stream.name} | {variant} | {q_f} | {q_b} | {q_bin} | diverged ({e}) | | | | |",
                          flush=True)
                    summary["streams"][name]["rows"].append({"stream": stream.name, "variant": variant, "q_f": q_f,
                                                             "q_b": q_b, "q_bin": q_bin, "diverged": str(e)})
                    grid[(q_f, q_b)] = 0.0
                    continue
                if not hand:
                    grid[(q_f, q_b)] = r["final_accuracy"]
                if (q_f, q_b) == (32, 32) and not hand:
                    summary["streams"][name]["fp32_accuracy"][variant] = r["final_accuracy"]
                errs = r.get("gradient_relative_error") or {}
                state = r["bytes"].get("trainable_state", r["bytes"]["trainable_parameters_fp32"])
                row = {"stream": stream.name, "variant": variant + (" (hand-written, 32 bits)" if hand else ""),
                       "q_f": q_f, "q_b": q_b, "q_bin": q_bin, "q_bin_update": args.q_bin_update,
                       "final_accuracy": r["final_accuracy"],
                       "vs_fp32_pp": 100 * (r["final_accuracy"] - grid[(32, 32)]),
                       "gradient_relative_error": errs, "bytes": r["bytes"], "trainable_state_bytes": state,
                       "fp32_state_bytes": r["bytes"]["trainable_parameters_fp32"],
                       "lr_layer": r["options"]["lr_layer"]}
                summary["streams"][name]["rows"].append(row)
                err_text = ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) or "–"
                print(f"| {stream.name} | {row['variant']} | {q_f} | {q_b} | {q_bin if variant == 'multi' else '–'} | "
                      f"{100 * r['final_accuracy']:.2f} % | {row['vs_fp32_pp']:+.2f} pp | {err_text} | {state:,} B | "
                      f"{row['fp32_state_bytes']:,} B |", flush=True)
                write_json(out / "summary.json", summary)
            title = f"{'head only (work A)' if variant == 'head' else 'multi-layer (work B)'}, {stream.name}"
            bit_width_heatmap(grid, args.q_f, args.q_b, title, out / f"heatmap_{variant}_{name}.png")
    summary["minutes"] = (time.perf_counter() - t_start) / 60
    write_json(out / "summary.json", summary)
    print(f"\ntotal {summary['minutes']:.1f} min; figures: {out}/heatmap_*.png")


if __name__ == "__main__":
    main()
