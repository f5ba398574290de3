"""The files of a run of ``bnncl learn`` (the torch simulation) or ``bnncl device learn`` (the device learner), written
by one function for both: a run directory holds ``result.json`` (the config, the backbone, the stream and one record
per strategy, :func:`bnncl.core.results.stream_result`), ``report.md`` (its table), ``accuracy.png`` and one
``matrix_<strategy>.png`` per strategy that saw more than one experience. And the files of ``bnncl report --out``.
NumPy only; matplotlib imported when the figures are drawn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from bnncl.core.atomic import atomic_write_text
from bnncl.core.results import report_markdown


def write_run(out, result: dict, log: Callable[[str], None] = print) -> None:
    """Write a run to the directory ``out``, each file atomically: ``result.json`` (``result`` as it is),
    ``report.md`` (:func:`bnncl.core.results.report_markdown`), ``accuracy.png`` (every run's curve, titled by the
    stream, "(device)" added when ``result["device"]``) and ``matrix_<strategy>.png`` for each run over more than one
    experience. Without matplotlib (a device), the figures are skipped and ``log`` says so: the JSON and the report
    are the results."""
    from bnncl.core.plots import accuracy_curves, accuracy_matrix

    out = Path(out)
    atomic_write_text(out / "result.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "report.md", report_markdown([result]))
    title = result["stream"].split(":")[0] + (" (device)" if result.get("device") else "")
    try:
        accuracy_curves(result["runs"], out / "accuracy.png", title=title)
        for r in result["runs"]:
            if len(r["accuracy"]) > 1:
                accuracy_matrix(r, out / f"matrix_{r['strategy']}.png")
    except ModuleNotFoundError as e:  # matplotlib, or one of its own dependencies
        log(f"no figures ({e.name} is not installed)")


def write_report(out, results: list[dict]) -> int:
    """``bnncl report --out``: ``report.md`` (one table of every result's runs) and one ``accuracy_<stream>.png``
    per stream in the directory ``out``; the number of figures."""
    from bnncl.core.plots import accuracy_curves

    out = Path(out)
    atomic_write_text(out / "report.md", report_markdown(results))
    by_stream: dict[str, list] = {}
    for res in results:
        for r in res["runs"]:
            by_stream.setdefault(r["stream"]["name"], []).append(r)
    for name, runs in by_stream.items():
        accuracy_curves(runs, out / f"accuracy_{name}.png", title=name)
    return len(by_stream)
