"""Helper of tests/training/test_pretrain_kill.py: run ``pretrain`` in a process that is SIGKILLed at a chosen moment.

    python pretrain_worker.py SPEC_JSON     run one spec in this process
    python pretrain_worker.py --serve       read specs from stdin, one JSON per line, and run each in a forked child

SPEC: ``{"options": {...PretrainOptions fields...}, "kill": KILL, "log": PATH, "kill_after": SECONDS}``; ``log``
(``--serve`` only) receives the child's stdout and stderr; ``kill_after`` (``--serve`` only, optional): the server
SIGKILLs the child that many seconds after the fork if it is still running (a kill at a random moment). KILL, the
moment at which the process SIGKILLs itself, is one of

* ``{"at": "before_step", "step": n}``: in the n-th optimizer step of this process, after ``backward`` and before
  the weights change (a global ``torch.optim`` step pre-hook);
* ``{"at": "after_step", "step": n}``: right after the n-th optimizer step (before the LR scheduler steps);
* ``{"at": "forward", "step": n, "call": m}``: inside the n-th forward pass of the model (training or, past the last
  step, evaluation), after the m-th submodule finished (global module hooks);
* ``{"at": POINT, "save": n}``: inside the n-th atomic write of the checkpoint file ``options["out"]`` made by this
  process, at POINT:

  - ``created``: the temporary file exists and is empty (``tempfile.mkstemp`` returned);
  - ``partial``: half of the bytes are written (and flushed to the OS);
  - ``before_fsync``: all bytes written and flushed, the file not fsynced yet;
  - ``after_fsync``: the temporary file fsynced, not renamed yet;
  - ``before_rename`` / ``after_rename``: around ``os.replace`` onto the checkpoint path;
  - ``after_dir_fsync``: the directory fsynced after the rename (the write is complete);
* ``null``: no kill.

Only process-wide functions are wrapped (torch's global hooks, ``tempfile.mkstemp``, ``os.fdopen``, ``os.fsync``,
``os.replace``), never bnncl's own, so the kill lands where the real writer is, whatever bnncl function calls it. A
run prints ``done E`` (E: epochs in the history) when ``pretrain`` returned, so a kill point that is never reached
shows as exit status 0.

``--serve`` exists for time: a new interpreter spends ~4 s importing torch (and torch._dynamo, which the first
optimizer imports); the server imports once, prints ``ready``, and for every spec forks a child (a process of its
own, killed for real), prints ``started PID``, waits for it and prints ``exit PID CODE`` (CODE as
``subprocess.Popen.returncode``: ``-9`` for SIGKILL). Torch runs on one thread, so the fork copies no busy pool.
"""

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

torch.set_num_threads(1)

from bnncl.models import BinaryResNet  # noqa: E402
from bnncl.training.pretrain import PretrainOptions, pretrain  # noqa: E402

WRITE_POINTS = ("created", "partial", "before_fsync", "after_fsync", "before_rename", "after_rename",
                "after_dir_fsync")


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_step_kill(kill: dict) -> None:
    at, target = kill["at"], kill["step"]
    count = {"pre": 0, "post": 0, "forward": 0, "calls": 0}

    if at in ("before_step", "after_step"):
        def pre(optimizer, args, kwargs):
            count["pre"] += 1
            if at == "before_step" and count["pre"] == target:
                die()

        def post(optimizer, args, kwargs):
            count["post"] += 1
            if at == "after_step" and count["post"] == target:
                die()

        register_optimizer_step_pre_hook(pre)
        register_optimizer_step_post_hook(post)
    elif at == "forward":
        def forward_pre(module, args):
            if isinstance(module, BinaryResNet):
                count["forward"] += 1
                count["calls"] = 0

        def forward_post(module, args, output):
            if count["forward"] == target:
                count["calls"] += 1
                if count["calls"] == kill["call"]:
                    die()

        register_module_forward_pre_hook(forward_pre)
        register_module_forward_hook(forward_post)
    else:
        raise SystemExit(f"unknown kill point {at!r}")


class _HalfWriter:
    """A file whose first ``write`` puts half of the bytes on the file, flushes them and dies."""

    def __init__(self, f):
        self._f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def write(self, data):
        data = bytes(data)
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        die()

    def __getattr__(self, name):
        return getattr(self._f, name)


def install_write_kill(kill: dict, out: Path) -> None:
    at, target = kill["at"], kill["save"]
    if at not in WRITE_POINTS:
        raise SystemExit(f"unknown kill point {at!r}")
    out = out.resolve()
    state = {"saves": 0, "fd": None, "armed": False, "fsyncs": 0}
    real_mkstemp, real_fdopen, real_fsync, real_replace = tempfile.mkstemp, os.fdopen, os.fsync, os.replace

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        p = Path(name).resolve()
        if p.parent == out.parent and out.name in p.name:  # a temporary file of the checkpoint, not a probe
            state["saves"] += 1
            state["armed"] = state["saves"] == target
            state["fd"], state["fsyncs"] = fd, 0
            if state["armed"] and at == "created":
                die()
        return fd, name

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        if state["armed"] and at == "partial" and fd == state["fd"]:
            return _HalfWriter(f)
        return f

    def fsync(fd):
        if not state["armed"]:
            return real_fsync(fd)
        state["fsyncs"] += 1
        first = state["fsyncs"] == 1  # the temporary file's; the second one is the directory's, after the rename
        if first and at == "before_fsync":
            die()
        result = real_fsync(fd)
        if first and at == "after_fsync":
            die()
        if not first and at == "after_dir_fsync":
            die()
        return result

    def replace(src, dst, *args, **kwargs):
        hit = state["armed"] and Path(dst).resolve() == out
        if hit and at == "before_rename":
            die()
        result = real_replace(src, dst, *args, **kwargs)
        if hit and at == "after_rename":
            die()
        return result

    tempfile.mkstemp, os.fdopen, os.fsync, os.replace = mkstemp, fdopen, fsync, replace


def run(spec: dict) -> int:
    opts = PretrainOptions(**spec["options"])
    kill = spec.get("kill")
    if kill is not None:
        if "step" in kill:
            install_step_kill(kill)
        else:
            install_write_kill(kill, Path(opts.out))
    _, result = pretrain(opts)
    print("done", len(result["history"]), flush=True)
    return 0


def _child(spec: dict) -> None:
    """In the forked child: output to the spec's log, run, and leave without the server's clean-up."""
    code = 1
    try:
        log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        code = run(spec)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve() -> int:
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo now, once, not in every child
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(spec)
        print("started", pid, flush=True)
        kill_after = spec.get("kill_after")
        if kill_after is None:
            _, status = os.waitpid(pid, 0)
        else:
            deadline = time.monotonic() + kill_after
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() >= deadline:  # not reaped yet, so the pid is still the child's
                    os.kill(pid, signal.SIGKILL)
                    _, status = os.waitpid(pid, 0)
                    break
                time.sleep(0.002)
        print("exit", pid, _returncode(status), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    sys.exit(run(json.loads(sys.argv[1])))
