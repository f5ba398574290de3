"""``bnncl summary``: per-layer parameters, memory at deployed precision and MACs of a backbone."""

from __future__ import annotations

from bnncl.cli.common import add_force, check_json_output, write_json


def add_parsers(sub) -> None:
    from bnncl.presets import PRESETS

    p = sub.add_parser("summary", help="per-layer parameters, memory at deployed precision and MACs of a backbone",
                       description="Print a per-layer table: parameters by bit width, bytes at deployed precision "
                                   "(1-bit weights counted as bits) and as an fp32 copy, binary and float MACs per "
                                   "image.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=PRESETS, default="fmnist", help="backbone preset (default: %(default)s)")
    src.add_argument("--checkpoint", metavar="PATH", help="summarize the architecture stored in a checkpoint")
    p.add_argument("--num-classes", type=int, default=10, help="head size for --preset (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    add_force(p)
    p.set_defaults(func=cmd_summary)


def cmd_summary(args) -> int:
    from bnncl.models import build_model, preset_config
    from bnncl.models.summary import format_summary, summarize

    check_json_output(args.json, [args.checkpoint], args.force)
    if args.checkpoint:
        from bnncl.checkpoint import load_model

        model, _ = load_model(args.checkpoint)
    else:
        model = build_model(preset_config(args.preset, args.num_classes))
    s = summarize(model)
    print(format_summary(s))
    if args.json:
        write_json(args.json, s)
    return 0
