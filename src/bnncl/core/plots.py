"""Figures of continual-learning runs (matplotlib, no display needed). Every function writes one PNG atomically."""

from __future__ import annotations

import io

import numpy as np

from bnncl.core.atomic import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def accuracy_curves(runs: list[dict], path, title: str | None = None) -> None:
    """Test accuracy after each experience, one line per run; a joint run (one point) as a dashed line."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    longest = max(len(r["accuracy"]) for r in runs)
    for r in runs:
        label = r.get("label") or r["strategy"]
        acc = np.asarray(r["accuracy"]) * 100
        if len(acc) == 1 and longest > 1:
            ax.axhline(acc[0], ls="--", lw=1.2, color="gray", label=f"{label} (upper bound)")
        else:
            ax.plot(np.arange(1, len(acc) + 1), acc, marker="o" if len(acc) <= 20 else None, ms=3, label=label)
    ax.set_xlabel("experience")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or runs[0]["stream"]["name"])
    _save(fig, path)
    plt.close(fig)


def accuracy_matrix(run: dict, path) -> None:
    """Per-class test accuracy (columns) after each experience (rows)."""
    plt = _pyplot()
    m = np.array([[np.nan if v is None else v for v in row] for row in run["accuracy_matrix"]], dtype=float) * 100
    fig, ax = plt.subplots(figsize=(0.45 * m.shape[1] + 2.5, 0.3 * m.shape[0] + 2))
    im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=0, vmax=100, interpolation="nearest")
    ax.set_xlabel("class")
    ax.set_ylabel("after experience")
    names = run.get("class_names") or [str(i) for i in range(m.shape[1])]
    ax.set_xticks(range(m.shape[1]), [n[:10] for n in names], rotation=60, ha="right", fontsize=7)
    if m.shape[0] <= 20:
        ax.set_yticks(range(m.shape[0]), [str(i + 1) for i in range(m.shape[0])])
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] < 50 else "black")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    ax.set_title(f"{run.get('label') or run['strategy']} on {run['stream']['name']}: accuracy matrix")
    _save(fig, path)
    plt.close(fig)


def bit_width_heatmap(grid: dict, qfs: list[int], qbs: list[int], title: str, path) -> None:
    """Final accuracy for each (q_f, q_b) of a bit-width study: ``grid[(q_f, q_b)]`` in [0, 1]; missing cells as '–'."""
    plt = _pyplot()
    data = np.full((len(qfs), len(qbs)), np.nan)
    for (q_f, q_b), acc in grid.items():
        if q_f in qfs and q_b in qbs:
            data[qfs.index(q_f), qbs.index(q_b)] = 100 * acc
    fig, ax = plt.subplots(figsize=(1.2 * len(qbs) + 2, 0.8 * len(qfs) + 1.5))
    im = ax.imshow(data, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(qbs)), [str(b) for b in qbs])
    ax.set_yticks(range(len(qfs)), [str(b) for b in qfs])
    ax.set_xlabel("q_b (backward bits)")
    ax.set_ylabel("q_f (forward bits)")
    mid = np.nanmean(data) if np.isfinite(data).any() else 0.0
    for i in range(len(qfs)):
        for j in range(len(qbs)):
            v = data[i, j]
            ax.text(j, i, "–" if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                    color="gray" if np.isnan(v) else "white" if v < mid else "black", fontsize=9)
    fig.colorbar(im, ax=ax, label="final accuracy (%)")
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)
