"""The result of one strategy over one stream, as JSON: the same record for the torch simulation (``bnncl learn``)
and the device learner (``bnncl device learn``), so reports and figures treat both alike. NumPy only."""

from __future__ import annotations

import numpy as np

from ..data.scenarios import Experience, Stream
from ..metrics import backward_transfer, first_seen, forgetting


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
