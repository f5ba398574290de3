"""The result of one strategy over one stream, as JSON: the same record for the torch simulation (``bnncl learn``)
and the device learner (``bnncl device learn``), so reports and figures treat both alike; reading a ``result.json``
back (``bnncl report``) and the markdown table of several. NumPy only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bnncl.core.errors import DataError
from bnncl.core.metrics import backward_transfer, first_seen, forgetting


def stream_result(options: dict, stream, experiences: list, rows: list[np.ndarray], accs: list[float],
                  seconds: list[float], step_seconds: list[float], latent_shape, nbytes: dict,
                  gradient_errors: dict | None = None) -> dict:
    """The record of one strategy over ``stream`` (a :class:`bnncl.data.scenarios.Stream`; ``experiences``: its
    :class:`~bnncl.data.scenarios.Experience` objects learned). ``rows``: per-class test accuracy after each
    experience; ``accs``: overall test accuracy after each."""
    matrix = np.vstack(rows)
    seen = first_seen([e.classes for e in experiences], stream.num_classes)
    return {
        "strategy": options["strategy"],
        "options": options,
        "stream": {"name": stream.name, "experiences": len(stream), "sizes": [len(e) for e in stream.experiences],
                   "test": len(stream.test), **{k: v for k, v in stream.info.items() if k != "strengths"}},
        "class_names": list(stream.class_names),
        "accuracy": accs,
        "final_accuracy": accs[-1],
        "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in r] for r in matrix],
        "first_seen": seen.tolist(),
        "forgetting": forgetting(matrix, seen),
        "backward_transfer": backward_transfer(matrix, seen),
        "seconds_per_experience": seconds,
        "seconds_per_step_median": float(np.median(step_seconds)) if len(step_seconds) else None,
        "latent_shape": list(latent_shape),
        "bytes": nbytes,
        "gradient_relative_error": gradient_errors,
    }


def check_result(res, path) -> None:
    """The parts of a ``result.json`` that ``bnncl report`` reads, with their types; a clear error naming the file
    and the first thing missing or wrong otherwise."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise DataError(f"{path}: not a bnncl learn result ({what})")

    number = (int, float)
    need(isinstance(res, dict), "not a JSON object")
    need(isinstance(res.get("runs"), list) and len(res["runs"]) > 0, "'runs' is not a non-empty list")
    for i, r in enumerate(res["runs"]):
        where = f"runs[{i}]"
        need(isinstance(r, dict), f"{where} is not an object")
        need(isinstance(r.get("strategy"), str), f"{where} has no 'strategy'")
        need(isinstance(r.get("stream"), dict) and isinstance(r["stream"].get("name"), str),
             f"{where} has no stream name")
        need(isinstance(r.get("options"), dict) and "lr_layer" in r["options"], f"{where} has no 'options'")
        acc = r.get("accuracy")
        need(isinstance(acc, list) and len(acc) > 0 and all(isinstance(a, number) and not isinstance(a, bool)
                                                            for a in acc), f"{where}: 'accuracy' is not a list of "
                                                                           "numbers")
        need(isinstance(r.get("final_accuracy"), number), f"{where}: 'final_accuracy' is not a number")
        if len(acc) > 1:
            for key in ("forgetting", "backward_transfer"):
                need(r.get(key) is None or isinstance(r.get(key), number), f"{where}: '{key}' is not a number")
        need(isinstance(r.get("bytes"), dict) and isinstance(r["bytes"].get("trainable_parameters_fp32"), number),
             f"{where} has no byte counts")
        for key in ("replay_memory", "consolidated_rows"):
            need(r["bytes"].get(key) is None or isinstance(r["bytes"][key], number),
                 f"{where}: bytes '{key}' is not a number")
        need(r.get("seconds") is None or isinstance(r.get("seconds"), number), f"{where}: 'seconds' is not a number")


def load_result(run) -> dict:
    """The checked ``result.json`` of a run: ``run`` is its run directory or the file itself."""
    path = Path(run) / "result.json" if Path(run).is_dir() else Path(run)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a result file")
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such result file (give a run directory of bnncl learn or its "
                        "result.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a bnncl learn result ({type(e).__name__}: {e})") from None
    check_result(res, path)
    return res


def _pp(v) -> str:
    return "–" if v is None else f"{v * 100:.1f} pp"


def _kib(n) -> str:
    return "–" if n is None else f"{n / 1024:,.1f} KiB"


def table_rows(result: dict) -> list[dict]:
    rows = []
    for r in result["runs"]:
        b = r["bytes"]
        rows.append({"stream": r["stream"]["name"], "strategy": r.get("label") or r["strategy"],
                     "lr_layer": r["options"]["lr_layer"], "final": r["final_accuracy"],
                     "forgetting": r["forgetting"] if len(r["accuracy"]) > 1 else None,
                     "bwt": r["backward_transfer"] if len(r["accuracy"]) > 1 else None,
                     "replay": b.get("replay_memory"),
                     "storage": r["options"]["replay_storage"] if "replay_memory" in b else "",
                     "patterns": r["options"]["replay_size"] if "replay_memory" in b else None,
                     "trainable": b["trainable_parameters_fp32"], "cwr": b.get("consolidated_rows"),
                     "seconds": r.get("seconds")})
    return rows


def report_markdown(results: list[dict]) -> str:
    """One markdown table, a row per run of every result (``runs[i].label`` names a row when set)."""
    lines = ["| stream | strategy | LR layer | final accuracy | forgetting | BWT | replay memory | "
             "trainable params (fp32) | CWR* rows | time |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for r in table_rows(res):
            replay = f"{_kib(r['replay'])} ({r['patterns']} x {r['storage']})" if r["replay"] else "–"
            seconds = "–" if r["seconds"] is None else f"{r['seconds']:.0f} s"
            lines.append(f"| {r['stream']} | {r['strategy']} | {r['lr_layer']} | {r['final'] * 100:.2f} % | "
                         f"{_pp(r['forgetting'])} | {_pp(r['bwt'])} | {replay} | {_kib(r['trainable'])} | "
                         f"{_kib(r['cwr'])} | {seconds} |")
    return "\n".join(lines) + "\n"
