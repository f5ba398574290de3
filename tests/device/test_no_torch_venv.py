"""The device runtime in a virtual environment of the base install: NumPy, tqdm and bnncl (with its C library), no
torch and no numba (numba is the ``blocks`` extra: work B's back-propagation through blocks).

The venv is built without network: its site-packages gets links to this interpreter's numpy and tqdm and a ``.pth``
entry for bnncl's sources, and nothing else, so ``import torch``, ``import numba`` (and matplotlib) fail inside it.
"""

import json
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

import bnncl
from bnncl.checkpoint import save_checkpoint
from bnncl.device import Model
from bnncl.export import export_checkpoint
from bnncl.models import build_model, preset_config


def _no_torch_venv(root: Path) -> Path:
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    import tqdm

    for module in (np, tqdm):
        pkg = Path(module.__file__).parent
        (site / pkg.name).symlink_to(pkg)
    libs = Path(np.__file__).parent.parent / "numpy.libs"
    if libs.is_dir():
        (site / libs.name).symlink_to(libs)
    (site / "bnncl_src.pth").write_text(str(Path(bnncl.__file__).parent.parent) + "\n")
    return python


@pytest.fixture(scope="module")
def python(tmp_path_factory):
    return _no_torch_venv(tmp_path_factory.mktemp("venv") / "device")


def test_torch_and_numba_are_absent_there(python):
    for module in ("torch", "numba"):
        proc = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
        assert proc.returncode != 0 and f"No module named '{module}'" in proc.stderr


def test_device_predict_runs_without_torch(python, tmp_path):
    model = build_model(preset_config("fmnist", 10))
    save_checkpoint(tmp_path / "model.pt", model)
    export_checkpoint(tmp_path / "model.pt", tmp_path / "model.bnn")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, size=20)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    expected = Model.load(tmp_path / "model.bnn").predict(images)

    api = ("import sys, numpy as np\n"
           "from bnncl.device import Model\n"
           f"pred = Model.load({str(tmp_path / 'model.bnn')!r}).predict(np.load({str(tmp_path / 'x.npy')!r}))\n"
           "assert 'torch' not in sys.modules and 'numba' not in sys.modules\n"
           "print(','.join(map(str, pred)))\n")
    proc = subprocess.run([python, "-c", api], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ",".join(map(str, expected))

    cli = [python, "-m", "bnncl.cli", "device", "predict", str(tmp_path / "model.bnn"),
           "--images", str(tmp_path / "x.npy"),
           "--image-labels", str(tmp_path / "y.npy"), "--out", str(tmp_path / "p.json")]
    proc = subprocess.run(cli, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["predictions"] == expected.tolist()
    assert report["accuracy"] == pytest.approx(float(np.mean(expected == labels)))


def test_device_learn_runs_without_torch(python, tmp_path):
    """bnncl device learn over a small Fashion-MNIST-format stream, in the venv: results written, state resumable."""
    from fixtures import write_idx_dataset

    data = tmp_path / "fmnist"
    write_idx_dataset(data, n_train=80, n_test=20)
    model = build_model(preset_config("fmnist", 10))
    save_checkpoint(tmp_path / "model.pt", model)
    export_checkpoint(tmp_path / "model.pt", tmp_path / "model.bnn")
    cli = [python, "-m", "bnncl.cli", "device", "learn", str(tmp_path / "model.bnn"), "--dataset", "fashion-mnist",
           "--data", str(data), "--stream", "nc", "--experiences", "2", "--epochs", "1", "--batch-size", "10",
           "--replay-size", "20", "--replay-batch", "8", "--lr-layer", "head", "--q-f", "8", "--q-b", "16",
           "--out", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(cli, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "no figures (matplotlib is not installed)" in proc.stdout
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    run = result["runs"][0]
    assert len(run["accuracy"]) == 2 and run["options"]["q_f"] == 8 and run["options"]["lr_layer"] == "head"
    state = tmp_path / "run" / "state_ar1.bnst"
    before = state.read_bytes()
    proc = subprocess.run(cli, capture_output=True, text=True)  # everything consumed: resumes, learns nothing
    assert proc.returncode == 0, proc.stderr
    assert state.read_bytes() == before
    assert json.loads((tmp_path / "run" / "result.json").read_text())["runs"][0]["accuracy"] == run["accuracy"]
    # the C learner: the same accuracies; work B (blocks): one line saying numba is missing
    proc = subprocess.run([*cli[:-3], "--runtime", "c", "--out", str(tmp_path / "run-c"), "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run-c" / "result.json").read_text())["runs"][0]["accuracy"] == run["accuracy"]
    blocks = [a for a in cli[:-3] if a not in ("--lr-layer", "head")] + ["--q-bin", "8", "--out", str(tmp_path / "b")]
    proc = subprocess.run(blocks, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "needs numba" in proc.stderr and "bnncl[blocks]" in proc.stderr


def test_torch_commands_say_what_is_missing(python, tmp_path):
    proc = subprocess.run([python, "-m", "bnncl.cli", "export", str(tmp_path / "model.pt"),
                           "--out", str(tmp_path / "m.bnn")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "needs torch" in proc.stderr and "bnncl[train]" in proc.stderr
