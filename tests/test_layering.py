"""The package's layering (README, "Layout"): a NumPy-only core that imports neither side; the data formats on the
core alone; the device side on the core and the data formats, never torch; the torch side around them.

Two checks: every module of the core, the data formats and the device imports in a process where ``import torch``
fails; and, read from the source (every import statement, lazy ones inside functions included), no module imports a
package its layer may not."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bnncl"
# layer -> the bnncl packages its modules may import (``bnncl`` itself: the version string)
ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "device": {"core", "data", "device"},
}


def modules(layer: str) -> list[str]:
    root = SRC / layer
    names = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        names.append(".".join(parts))
    return names


def bnncl_imports(path: Path) -> set[str]:
    """The ``bnncl.<package>`` names ``path`` imports anywhere in it (absolute imports; the package uses no others)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "bnncl":
                found.add(parts[1] if len(parts) > 1 else "")
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_the_layers_below(layer):
    paths = sorted((SRC / layer).rglob("*.py"))
    assert paths, layer
    for path in paths:
        bad = bnncl_imports(path) - ALLOWED[layer] - {""}
        assert not bad, f"{path.relative_to(SRC)} imports bnncl.{', bnncl.'.join(sorted(bad))}"


def test_the_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bnncl.simulation.strategy import Strategy\n")
    assert bnncl_imports(bad) == {"simulation"}


def test_core_data_and_device_import_without_torch():
    names = modules("core") + modules("data") + modules("device")
    assert "bnncl.core.protocol" in names and "bnncl.device.learner" in names and "bnncl.device.kernels.binary" in names
    code = ("import importlib, sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "assert sys.modules['torch'] is None\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
