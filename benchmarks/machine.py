"""What the benchmarks share: the one-line machine description every benchmark prints beside its figures, the
Markdown tables they print, the JSON file they write, and the demo's device learning options."""

import json
import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine() -> str:
    import torch

    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def table(header: list[str], rows: list[list], align: str | None = None) -> None:
    """Print a Markdown table (first column left-aligned, the others right-aligned unless ``align`` says "l"/"r"
    per column), then a blank line."""
    align = align or "l" + "r" * (len(header) - 1)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if a == "l" else "---:" for a in align) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print()


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def write_json(path: str | os.PathLike, result: dict) -> Path:
    """Write ``result`` as indented JSON to ``path`` (its folder made if missing; atomically, so an interrupted
    benchmark never leaves half a file); returns the path."""
    from bnncl.atomic import atomic_write_text

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return out


def demo_options(config: str, bits: int, strategy: str = "ar1"):
    """The demo's learning options of ``config``: the device's (``bits`` 8: 8/16 at the head, 8/16/8 for multi, 1-bit
    replay) or the fp32 learner's (``bits`` 32: every bit width at 32, float32 replay). One epoch (only the fills and
    the learn() checks go through whole experiences)."""
    from bnncl.learning.options import LearnOptions

    lr_layer = "head" if config == "head" else None  # None: the model file's LR layer
    if bits == 8:
        return LearnOptions(strategy=strategy, lr_layer=lr_layer, qf=8, qb=16, qbin=8 if config == "multi" else 32,
                            replay_storage="bits", epochs=1)
    return LearnOptions(strategy=strategy, lr_layer=lr_layer, qf=32, qb=32, qbin=32, replay_storage="float32",
                        epochs=1)
