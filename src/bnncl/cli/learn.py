"""``bnncl learn`` (continual learning on the torch simulation) and ``bnncl report`` (runs side by side)."""

from __future__ import annotations

from bnncl.cli.common import LEARN_DEFAULTS, add_data_args, add_strategy_args, add_stream_args, learn_config


def add_parsers(sub) -> None:
    from bnncl.data.config import DEFAULT_OUT

    p = sub.add_parser("learn",
                       help="continual learning over a scenario with one or more strategies (torch simulation)",
                       description="Run strategies over a continual-learning stream and write result.json, report.md, "
                                   "accuracy.png and one accuracy matrix per strategy to --out. Without --checkpoint "
                                   "the backbone is first pretrained on experience 0 (kept in OUT/pretrain and "
                                   "reused). Flags override the --config TOML file.")
    p.add_argument("--config", metavar="FILE.toml", help="a TOML config (see the README); flags override it")
    add_data_args(p, default_dataset=None)
    add_stream_args(p)
    g = p.add_argument_group("backbone")
    g.add_argument("--checkpoint", metavar="PATH", help="pretrained backbone (default: pretrain on experience 0)")
    g.add_argument("--pretrain-epochs", type=int, help="epochs of that pretraining (default 8)")
    g.add_argument("--pretrain-holdout", type=float, metavar="F",
                   help="pretrain on a stratified fraction F of the training instances instead, and build the stream "
                        "from the rest (a disjoint instance split)")
    g.add_argument("--binary-boundary", metavar="BLOCK",
                   help="pretrain with the input of BLOCK binarized in full (1-bit replay there is exact)")
    add_strategy_args(p)
    p.add_argument("--seed", type=int, help=f"default {LEARN_DEFAULTS['seed']}")
    p.add_argument("--out", metavar="DIR", help=f"run directory (default: {DEFAULT_OUT})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_learn)

    p = sub.add_parser("report", help="put several learn runs side by side: a table and a figure per stream",
                       description="Read the result.json of each run and print one markdown table; with --out, also "
                                   "write report.md and one accuracy figure per stream.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories of bnncl learn (or their result.json)")
    p.add_argument("--out", metavar="DIR", help="write report.md and accuracy_<stream>.png here")
    p.set_defaults(func=cmd_report)


def cmd_learn(args) -> int:
    from bnncl.core.atomic import check_writable_dir
    from bnncl.core.results import report_markdown
    from bnncl.data.config import DEFAULT_OUT
    from bnncl.simulation.experiment import run_experiment

    cfg = learn_config(args)
    check_writable_dir(cfg.get("out") or DEFAULT_OUT)
    result = run_experiment(cfg, progress=not args.quiet)
    print(result["backbone"]["architecture"])
    print(result["stream"])
    print(report_markdown([result]), end="")
    print(f"wrote {result['config']['out']}/result.json, report.md, accuracy.png and the accuracy matrices")
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from bnncl.core.atomic import check_writable_dir, same_file
    from bnncl.core.errors import OutputError
    from bnncl.core.results import load_result, report_markdown
    from bnncl.core.runs import write_report

    if args.out:
        check_writable_dir(args.out)
        for run in args.runs:  # report.md there would replace that run's own report
            run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
            if Path(args.out).is_dir() and same_file(args.out, run_dir):
                raise OutputError(f"{args.out}: is the run directory {run}; writing the report there would replace "
                                  "its own report.md (give another --out)")
    results = []
    for run in args.runs:
        res = load_result(run)
        name = (Path(run) if Path(run).is_dir() else Path(run).parent).name
        for r in res["runs"]:
            r["label"] = f"{r['strategy']} ({name})" if len(args.runs) > 1 else r["strategy"]
        results.append(res)
    print(report_markdown(results), end="")
    if args.out:
        figures = write_report(args.out, results)
        print(f"wrote {Path(args.out)}/report.md and {figures} figure(s)")
    return 0
