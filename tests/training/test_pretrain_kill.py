"""Pretraining killed with SIGKILL, then resumed: the checkpoint on disk always loads, and resuming gives bit for bit
the weights of an uninterrupted run.

``pretrain_worker.py --serve`` (its own process, one torch thread) runs every pretraining in a forked child of its
own, which is SIGKILLed:

* by itself at a chosen moment inside an epoch (before or after an optimizer step, inside a forward pass, during the
  final evaluation), the step and submodule drawn from a fixed seed (``KILL_SEED``) so a failure replays;
* by itself at a chosen point of the atomic write of the checkpoint (temporary file created, half written,
  before/after its fsync, before/after the rename, after the directory's fsync), in the first, second or third
  write: killing from inside is what makes the point exact, and what is tested is what the kill leaves on disk;
* by the server at a random time, in a chain of resumed runs (the moments differ from run to run: what must hold
  holds for every moment).

After each kill:

* nothing lies beside the checkpoint but temporary files (names starting with '.'), which no reader takes for it;
* the checkpoint, when there is one, loads (``read_checkpoint``, ``load_model``), records the epochs the kill point
  implies (the previous checkpoint survives a kill before the rename), and equals the checkpoint the uninterrupted
  run wrote after as many epochs (weights, optimizer and scheduler state, history but for its clock);
* pretraining again with ``resume=True`` runs to the end, removes the temporary files the kill left, and gives the
  weights of the uninterrupted run: ``torch.equal`` on every tensor of the state dict.

Oracle: one uninterrupted in-process run with the same options (module fixture), on one torch thread like the worker.
"""

from __future__ import annotations

import json
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import bnncl.training.pretrain as pretrain_mod
from bnncl.checkpoint import load_model, read_checkpoint
from bnncl.models import BackboneConfig
from bnncl.training.pretrain import PretrainOptions, pretrain
from fixtures import write_idx_dataset

# the worker runs on one thread; so do the oracle and the resumed runs here
pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKER = Path(__file__).with_name("pretrain_worker.py")
EPOCHS, STEPS = 3, 3  # 64 images in batches of 16 would be 4 steps; max_steps_per_epoch cuts every epoch to 3
KILL_SEED = 20260  # draws the in-epoch kill moments and the random-time kills
RANDOM_KILLS = 8
TIMEOUT = 120  # seconds for the worker to answer (its start imports torch)


def _options(data_dir, out, **kw) -> dict:
    """The options of tests/training/test_pretrain.py's ``_opts``, for 3 epochs of 3 steps, as plain data."""
    return dict(dict(data=str(data_dir), epochs=EPOCHS, batch_size=16, out=str(out), progress=False,
                     max_steps_per_epoch=STEPS), **kw)


def _step_kills() -> list:
    rng = random.Random(KILL_SEED)
    epoch = lambda e: rng.randint((e - 1) * STEPS + 1, e * STEPS)  # noqa: E731  a global step inside epoch e
    return [
        ("epoch1-before-step", {"at": "before_step", "step": epoch(1)}, 0),
        ("epoch2-after-step", {"at": "after_step", "step": epoch(2)}, 1),
        ("epoch2-in-forward", {"at": "forward", "step": epoch(2), "call": rng.randint(1, 40)}, 1),
        ("epoch3-before-step", {"at": "before_step", "step": epoch(3)}, 2),
        # past the last step: the last checkpoint is written, the evaluation on the test split is running
        ("in-evaluation", {"at": "forward", "step": EPOCHS * STEPS + 1, "call": rng.randint(1, 40)}, EPOCHS),
    ]


# (point of the atomic write, the n-th checkpoint write it lands in, epochs the checkpoint on disk holds afterwards)
WRITE_KILLS = [
    ("created", 1, 0),
    ("partial", 2, 1),
    ("before_fsync", 2, 1),
    ("after_fsync", 3, 2),
    ("before_rename", 2, 1),
    ("after_rename", 1, 1),
    ("after_dir_fsync", 2, 2),
]

CASES = ([pytest.param(kill, k, id=name) for name, kill, k in _step_kills()]
         + [pytest.param({"at": at, "save": n}, k, id=f"write{n}-{at}") for at, n, k in WRITE_KILLS])


class Worker:
    """``pretrain_worker.py --serve``: one spec at a time, each run in a forked child."""

    def __init__(self, log_dir: Path):
        self.log_dir, self.runs = log_dir, 0
        self.proc = subprocess.Popen([sys.executable, str(WORKER), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if self._line() != ["ready"]:
            self.close()
            pytest.fail(f"the worker did not start: {self.proc.stderr.read()}")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def _line(self) -> list[str]:
        try:
            return self.lines.get(timeout=TIMEOUT).split()
        except queue.Empty:
            pytest.fail(f"the worker did not answer within {TIMEOUT} s")

    def run(self, options: dict, kill: dict | None = None, kill_after: float | None = None) -> tuple[int, str]:
        """(return code of the child, its output)."""
        self.runs += 1
        log = self.log_dir / f"run{self.runs}.log"
        spec = {"options": options, "kill": kill, "log": str(log), "kill_after": kill_after}
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        started = self._line()
        assert started[:1] == ["started"], f"the worker failed: {started} {self.proc.stderr.read()}"
        ended = self._line()
        assert ended[:2] == ["exit", started[1]], f"the worker failed: {ended}"
        return int(ended[2]), log.read_text() if log.exists() else ""

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(tmp_path_factory.mktemp("worker-logs"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmnist")
    write_idx_dataset(d, n_train=64, n_test=16, seed=1)
    return d


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """The uninterrupted run: its final state dict, test report, and the checkpoint it wrote after every epoch."""
    out = tmp_path_factory.mktemp("reference") / "model.pt"
    payloads = {}
    real_save = pretrain_mod.save_checkpoint

    def keep(path, model, **extra):
        real_save(path, model, **extra)
        payloads[extra["epoch"]] = read_checkpoint(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pretrain_mod, "save_checkpoint", keep)
        model, result = pretrain(PretrainOptions(**_options(data_dir, out)))
    assert sorted(payloads) == list(range(1, EPOCHS + 1))
    assert [h["epoch"] for h in result["history"]] == list(range(1, EPOCHS + 1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    _assert_equal(payloads[EPOCHS]["model"], state, "the reference's last checkpoint")
    return {"state": state, "payloads": payloads, "test": result["test"]}


def _assert_equal(a, b, what: str, path: str = "") -> None:
    """Bit for bit: tensors by dtype and torch.equal, containers recursively, the rest by ==."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), f"{what}: {path} is not a tensor in both"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {path}: {a.dtype}{tuple(a.shape)} != " \
                                                          f"{b.dtype}{tuple(b.shape)}"
        if not torch.equal(a, b):
            ne = a != b
            diff = (a.double() - b.double()).abs().max().item() if a.is_floating_point() else "-"
            pytest.fail(f"{what}: {path or 'tensor'} differs in {int(ne.sum())} of {a.numel()} elements "
                        f"(largest difference {diff})", pytrace=False)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{what}: keys of {path or 'the dict'} differ: {sorted(a)} != {sorted(b)}"
        for k in a:
            _assert_equal(a[k], b[k], what, f"{path}/{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), f"{what}: lengths of {path} differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, what, f"{path}/{i}")
    else:
        assert a == b, f"{what}: {path} differs: {a!r} != {b!r}"


def _history_without_clock(history) -> list:
    return [{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in history]


def _check_disk(run_dir: Path, out: Path, reference, what: str, epochs: int | None = None) -> tuple[int, list[str]]:
    """What a kill left: only temporary files beside the checkpoint, and the checkpoint the uninterrupted run wrote
    after as many epochs (``epochs`` of them when given; none for 0). Returns (its epochs, the temporary files)."""
    others = sorted(p.name for p in run_dir.iterdir() if p.name != out.name)
    stray = [p for p in others if not p.startswith(".")]
    assert not stray, f"{what}: files a reader could take for the checkpoint: {stray}"
    if not out.exists():
        assert not epochs, f"{what}: no checkpoint after {epochs} complete epochs"
        return 0, others
    assert epochs != 0, f"{what}: a checkpoint exists though no epoch was complete"
    payload = read_checkpoint(out)  # raises CheckpointError if the kill left it unreadable
    k = payload["epoch"]
    model, _ = load_model(out, expect=BackboneConfig.from_dict(reference["payloads"][1]["config"]))
    assert epochs is None or k == epochs, f"{what}: the checkpoint holds {k} epochs, expected {epochs}"
    assert 1 <= k <= EPOCHS, f"{what}: the checkpoint holds {k} epochs"
    ref = reference["payloads"][k]
    _assert_equal(model.state_dict(), ref["model"], f"{what}: weights of the checkpoint of epoch {k}")
    for key in ("optimizer", "scheduler", "config"):
        _assert_equal(payload[key], ref[key], f"{what}: {key} of the checkpoint of epoch {k}")
    assert _history_without_clock(payload["meta"]["history"]) == _history_without_clock(ref["meta"]["history"]), what
    assert payload["meta"]["options"] == ref["meta"]["options"], what
    return k, others


def _resume_here(data_dir, run_dir, out, reference, left: list[str], what: str) -> None:
    """Pretrain again with resume=True in this process: the uninterrupted weights, and the kill's temporary files
    gone (pretraining removes those of its checkpoint when it starts)."""
    model, result = pretrain(PretrainOptions(**_options(data_dir, out, resume=True)))
    _assert_equal(model.state_dict(), reference["state"], f"{what}, then resumed: final weights")
    assert [h["epoch"] for h in result["history"]] == list(range(1, EPOCHS + 1)), what
    assert result["test"] == reference["test"], what
    _, after = _check_disk(run_dir, out, reference, f"{what}, then resumed", EPOCHS)
    assert after == [], f"{what}: temporary files left after the resumed run: {after} (the kill left {left})"


@pytest.mark.parametrize("kill, epochs_on_disk", CASES)
def test_sigkill_then_resume_gives_the_uninterrupted_weights(kill, epochs_on_disk, worker, data_dir, reference,
                                                             tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = run_dir / "model.pt"
    what = f"killed at {kill}"
    code, log = worker.run(_options(data_dir, out), kill)
    assert code != 0, f"{what}: the kill point was never reached, pretraining completed"
    assert code == -signal.SIGKILL, f"{what}: the run failed ({code}): {log}"
    _, left = _check_disk(run_dir, out, reference, what, epochs_on_disk)
    _resume_here(data_dir, run_dir, out, reference, left, what)


def test_chained_kills_inside_an_epoch_then_inside_the_resumed_runs_write(worker, data_dir, reference, tmp_path):
    """Killed in epoch 2; the resumed run killed halfway through its first write (epoch 2's checkpoint); resumed
    again: still the uninterrupted weights."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = run_dir / "model.pt"
    first = {"at": "after_step", "step": random.Random(KILL_SEED + 1).randint(STEPS + 1, 2 * STEPS)}
    code, log = worker.run(_options(data_dir, out), first)
    assert code == -signal.SIGKILL, f"killed at {first}: the run ended with {code}: {log}"
    _check_disk(run_dir, out, reference, f"killed at {first}", 1)

    second = {"at": "partial", "save": 1}
    code, log = worker.run(_options(data_dir, out, resume=True), second)
    assert code == -signal.SIGKILL, f"resumed, killed at {second}: the run ended with {code}: {log}"
    _, left = _check_disk(run_dir, out, reference, f"killed at {first}, resumed, killed at {second}", 1)
    _resume_here(data_dir, run_dir, out, reference, left, f"killed at {first}, resumed, killed at {second}")


def test_sigkill_at_random_times_in_a_chain_of_resumed_runs(worker, data_dir, reference, tmp_path):
    """Each run resumes from what the previous kill left and is SIGKILLed by the worker after a random delay (up to
    1.2 times an uninterrupted run's share of what is left, so some runs complete). The epochs on disk never go back; a
    run that completes holds the uninterrupted weights and starts the chain again; the last chain is resumed here
    to the end."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = run_dir / "model.pt"
    t0 = time.perf_counter()
    code, log = worker.run(_options(data_dir, out))
    t_run = time.perf_counter() - t0
    assert code == 0, f"an uninterrupted run failed ({code}): {log}"
    _check_disk(run_dir, out, reference, "an uninterrupted worker run", EPOCHS)
    shutil.rmtree(run_dir)
    run_dir.mkdir()

    rng = random.Random(KILL_SEED + 2)
    k_before, landed = 0, []
    for trial in range(RANDOM_KILLS):
        delay = rng.uniform(0, 1.2 * t_run * (EPOCHS - k_before + 1) / (EPOCHS + 1))  # +1: start-up, evaluation
        code, log = worker.run(_options(data_dir, out, resume=True), kill_after=delay)
        what = f"trial {trial}: killed {delay:.3f} s after the start"
        assert code in (0, -signal.SIGKILL), f"{what}: the run failed ({code}): {log}"
        k, left = _check_disk(run_dir, out, reference, what, EPOCHS if code == 0 else None)
        assert k >= k_before, f"{what}: the checkpoint went back from {k_before} to {k} epochs"
        landed.append(("completed" if code == 0 else f"{k} epochs on disk") + (", temporary file" if left else ""))
        if code == 0:  # the resumed run reached the uninterrupted weights (checked by _check_disk); start again
            shutil.rmtree(run_dir)
            run_dir.mkdir()
            k = 0
        k_before = k
    print(f"random kills (run {t_run:.2f} s): {landed}")
    _, left = _check_disk(run_dir, out, reference, "the last chain")
    _resume_here(data_dir, run_dir, out, reference, left, "the last chain of random kills")
