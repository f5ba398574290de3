"""The result of one strategy over one stream, as JSON: the same record for the torch simulation (``bnncl learn``)
and the device learner (``bnncl device learn``), so reports and figures treat both alike. NumPy only."""

from __future__ import annotations

import numpy as np

from bnncl.core.metrics import backward_transfer, first_seen, forgetting
from bnncl.data.scenarios import Experience, Stream


def stream_result(options: dict, stream: Stream, experiences: list[Experience], rows: list[np.ndarray],
                  accs: list[float], seconds: list[float], step_seconds: list[float], latent_shape, nbytes: dict,
                  gradient_errors: dict | None = None) -> dict:
    """``rows``: per-class test accuracy after each experience; ``accs``: overall test accuracy after each."""
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
    from bnncl.core.errors import DataError

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
