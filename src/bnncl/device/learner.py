"""The on-device learner: an exported model that keeps learning, with the device runtime only (NumPy and the C
library; numba for the blocks' products of work B).

    from bnncl.device import Learner
    from bnncl.core.options import LearnOptions
from bnncl.core.protocol import (DEVICE_STRATEGIES, ExperienceLoop, ExperiencePlan, default_lr_layer, generator,
                                 plan_experience)
    learner = Learner.open("model.bnn", "state.bnst", LearnOptions(strategy="ar1", lr_layer="head", q_f=8, q_b=16))
    learner.learn(images, labels)        # one experience; the state is saved when it ends
    labels = learner.predict(images)

Inside, per experience (the experience protocol of :mod:`bnncl.core.protocol`, as the simulation's strategy runs
it):

1. ``cur`` = patterns per class in the experience, replayed ones included (AR1*); CWR* loads the consolidated rows of
   the present classes into the head (the rest zero).
2. For every epoch, a fresh shuffle; each step takes ``batch_size`` new images through the frozen part (bit-packed
   XNOR-popcount kernels), adds ``replay_batch`` patterns decoded from the 1-bit replay memory, and runs one SGD step
   of the trainable part: in integer arithmetic at ``q_f``/``q_b`` bits (:mod:`bnncl.device.integer_step`), or in
   float32 when both are 32 (the fp32 learner, the baseline of ``benchmarks/learning.py``).
3. CWR* consolidates the trained rows; the replay memory takes its share of the experience (stored as packed signs);
   the head used for prediction becomes the consolidated rows; the state is written atomically.

The latents of new images are computed step by step rather than kept for the whole experience (the simulation keeps
them): the same numbers, a peak memory of one minibatch. ``frozen_chunk`` runs the frozen part on fewer images at a
time (the same latents, bit for bit): the float stem's output, the largest array of a head-only step, shrinks with it.

Trainable part (:mod:`bnncl.device.trainable`): the head alone (LR layer ``head``: work A; with ``ar1`` the replay
memory holds the head's input), or the blocks above the LR layer, the pool and the head (work B; the default of
``ar1``: the model file's LR layer, where the stored activation is the next block's ±1 input).

State (:meth:`Learner.save`): head, consolidated rows and counts, replay memory, every random generator's state, the
experiences consumed and their log; one checksummed file (the model file's container), written to a temporary file,
fsynced and renamed, the previous generation kept beside it as ``<state>.prev``. A state file that does not load is
refused with an error naming it, and left as it is.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from dataclasses import fields
from pathlib import Path

import numpy as np

from bnncl import __version__
from bnncl.core.affine import FLOAT_BITS
from bnncl.core.cwr import CWRStar
from bnncl.core.errors import ConfigError, DataError, LearnerStateError, reason
from bnncl.core.memory import LatentMemory
from bnncl.core.options import LearnOptions
from bnncl.core.protocol import (
    DEVICE_STRATEGIES,
    ExperienceLoop,
    ExperiencePlan,
    default_lr_layer,
    generator,
    plan_experience,
)
from bnncl.core.rng import Pcg32
from bnncl.device.model import Model
from bnncl.device.ops import Block, FoldedStem, Head
from bnncl.device.trainable import BlocksPart, HeadPart

STATE_FORMAT = "bnncl-learner-state"
STATE_VERSION = 1


def _rng_state(rng: Pcg32) -> dict:
    return rng.state


def _set_rng_state(rng: Pcg32, state: dict) -> None:
    rng.state = state


class LazyLatents:
    """The frozen part's output for ``images[index]``, computed when indexed (the replay memory's update picks a few
    patterns of an experience; nothing holds the latents of all of them)."""

    def __init__(self, learner: "Learner", images: np.ndarray):
        self.learner, self.images = learner, images
        self.shape = (len(images), *learner.latent_shape)

    def __getitem__(self, index) -> np.ndarray:
        return self.learner.latents(self.images[index])  # a minibatch (or frozen_chunk) at a time: the step's peak


class Learner(ExperienceLoop):
    def __init__(self, model: Model, options: LearnOptions | None = None, backend: str | None = None,
                 state_path: str | os.PathLike | None = None, frozen_chunk: int | None = None):
        options = options or LearnOptions(strategy="ar1", lr_layer="head")
        if frozen_chunk is not None and (isinstance(frozen_chunk, bool) or not isinstance(frozen_chunk, int)
                                         or frozen_chunk < 1):
            raise ConfigError(f"frozen_chunk must be a whole number of images, at least 1 (not {frozen_chunk!r})")
        # images per pass of the frozen part; not a setting of the learning (the latents are the same), so not saved
        self.frozen_chunk = frozen_chunk
        if options.strategy not in DEVICE_STRATEGIES:
            raise ConfigError(f"the device learner runs {' or '.join(DEVICE_STRATEGIES)}, not {options.strategy!r} "
                              "(naive and joint are the simulation's lower and upper bounds)")
        lr_layer = options.lr_layer or default_lr_layer(options.strategy, model.lr_layer)  # the file's: export's
        if options.q_ranges != "dynamic":
            raise ConfigError("the device learner uses dynamic quantizer ranges (min/max per call); fixed ranges are "
                              "simulated by bnncl learn")
        bits = (options.q_f, options.q_b) if lr_layer == "head" else (options.q_f, options.q_b, options.q_bin)
        self.fp32 = min(bits) >= FLOAT_BITS
        if not self.fp32 and max(bits) >= FLOAT_BITS:
            names = "q_f and q_b" if lr_layer == "head" else "q_f, q_b and q_bin"
            raise ConfigError(f"the device learner runs with {names} all below 32 bits (integer arithmetic) or all 32 "
                              f"(float32), not {'/'.join(map(str, bits))}")
        self.model, self.options = model, options
        self.backend = backend or ("float" if self.fp32 else "packed")
        model.cut(lr_layer)
        self.head_op = model.trainable_ops[-1]
        if not isinstance(self.head_op, Head):
            raise ConfigError(f"{model.path}: the last layer is not the head")
        self.num_classes, self.features = self.head_op.weight.shape
        if model.num_classes != self.num_classes:
            raise ConfigError(f"{model.path}: {model.num_classes} class names for a head of {self.num_classes} rows")
        self.quant_rng = generator(options.seed, "quantizer")
        self.part = (HeadPart if lr_layer == "head" else BlocksPart)(model, options, self.quant_rng)
        # One minibatch of new images through the frozen part: the latent shape, and the most bytes one of its ops
        # holds (input and output together) in a learning step.
        h, w, c = model.input_shape
        peak = [0]
        self.latent_shape = tuple(self.latents(np.zeros((options.batch_size, h, w, c), np.uint8), peak).shape[1:])
        self.frozen_peak_bytes = peak[0]
        self.step_peak_bytes = None  # measured on the first full training step
        self._full_batch = options.batch_size + (options.replay_batch if options.strategy == "ar1" else 0)
        self.cwr = CWRStar(self.num_classes, self.features, dtype=np.float32)
        self.memory = None
        if options.strategy == "ar1":
            if options.replay_size < 1:
                raise ConfigError("ar1 needs a replay memory: replay_size must be at least 1")
            first = model.trainable_ops[0]
            offset = None if first.in_threshold is None else -first.in_threshold  # the shift of sign(x + shift)
            self.memory = LatentMemory(options.replay_size, self.latent_shape, options.replay_storage, offset)
        self.shuffle_rng, self.replay_rng = generator(options.seed, "shuffle"), generator(options.seed, "replay")
        self.experiences = 0
        self.log: list[dict] = []  # one entry per experience consumed (anything JSON-able a caller adds, too)
        self.step_seconds: list[float] = []
        self.state_path = Path(state_path) if state_path is not None else None

    @classmethod
    def open(cls, model_path: str | os.PathLike, state_path: str | os.PathLike | None = None,
             options: LearnOptions | None = None, backend: str | None = None,
             frozen_chunk: int | None = None, runtime: str = "python"):
        """The learner of ``model_path``, resumed from ``state_path`` when that file exists (its options must match
        ``options``; without ``options``, the state's own are used). ``runtime="c"``: the C learner
        (:class:`bnncl.device.clearner.CLearner`, the same learning bit for bit; the head at q_f/q_b <= 16 only),
        whose state file is its own two-slot format."""
        if runtime == "c":
            from bnncl.device.clearner import CLearner

            if backend not in (None, "c") or frozen_chunk is not None:
                raise ConfigError("the C learner runs its frozen part in C, image by image: no backend or "
                                  "frozen_chunk to choose")
            return CLearner.open(model_path, state_path, options)
        if runtime != "python":
            raise ConfigError(f"unknown runtime {runtime!r} (valid: python, c)")
        model = Model.load(model_path)
        if state_path is not None:  # temporary files of a save a power cut interrupted: never the state itself
            for stale in Path(state_path).parent.glob(f".{Path(state_path).name}.*tmp"):
                stale.unlink(missing_ok=True)
        if state_path is not None and Path(state_path).exists():
            from bnncl.device.clearner import is_c_state

            if is_c_state(Path(state_path)):
                raise LearnerStateError(f"{state_path}: a state of the C learner: open it with runtime \"c\" "
                                        "(--runtime c), or give another --state (the file is left as it is)")
            meta, arrays = cls._read_state(state_path)
            saved = cls._saved_options(state_path, meta)
            if options is not None and options != saved:
                diff = [f"{f.name} {getattr(saved, f.name)!r} (state) vs {getattr(options, f.name)!r}"
                        for f in fields(LearnOptions) if getattr(saved, f.name) != getattr(options, f.name)]
                raise ConfigError(f"{state_path}: the saved learner has other settings: {'; '.join(diff)} "
                                  "(give another --state to start afresh)")
            learner = cls(model, saved, backend, state_path, frozen_chunk)
            learner._restore(state_path, meta, arrays)
            return learner
        return cls(model, options, backend, state_path, frozen_chunk)

    # -- checks -----------------------------------------------------------------------------------------------------

    def check_experience(self, images, labels) -> tuple[np.ndarray, np.ndarray]:
        """The experience as (uint8 images, int64 labels), or a clear error; nothing is changed before this passes."""
        images = self.model.check_images(images)
        if len(images) == 0:
            raise DataError("an empty experience (0 images): nothing to learn")
        return images, self.model.check_labels(labels, len(images))

    # -- running ----------------------------------------------------------------------------------------------------

    def latents(self, images: np.ndarray, peak: list | None = None) -> np.ndarray:
        """The frozen part's output at the LR layer as the trainable part takes it: float32 (N, features) for the
        head, (N, C, H, W) for a block (±1 where the LR layer is binary), ``frozen_chunk`` images at a time (default:
        a learning minibatch). ``peak``: see :meth:`Model._run`."""
        chunk = self.frozen_chunk or self.options.batch_size
        parts = []
        for i in range(0, len(images), chunk) or [0]:  # no images: one empty pass, for the shape
            act = self.model.latent(images[i:i + chunk], self.backend, peak=peak)
            parts.append(act.real if act.real is not None else act.signs())
        x = np.concatenate(parts) if len(parts) != 1 else parts[0]
        return x if isinstance(self.part, HeadPart) else np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step of the trainable part on latents ``x`` with labels ``y``; returns the loss. The first step of
        a full minibatch is measured: the most bytes its arrays held at once (tracemalloc sees every NumPy array)."""
        if self.step_peak_bytes is None and len(y) >= self._full_batch:
            return self._measured_step(x, y)
        return self.part.train_step(x, y)

    def _measured_step(self, x, y) -> float:
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        try:
            return self.part.train_step(x, y)
        finally:
            self.step_peak_bytes = tracemalloc.get_traced_memory()[1] - before + x.nbytes + y.nbytes
            if not tracing:
                tracemalloc.stop()

    def learn(self, images, labels) -> dict:
        """Consume one experience; persist the state (when the learner has a state path). Returns its log entry.
        If anything fails midway (a quantizer meeting NaN or inf after a divergence, an interrupt), the learner is
        put back as it was before the experience, as the state on disk is."""
        images, labels = self.check_experience(images, labels)
        before = self.state()
        try:
            return self._learn(images, labels)
        except BaseException:
            self._restore("the state before this experience", *before)
            raise

    # -- the protocol's phases ----------------------------------------------------------------------------------

    def begin_experience(self, labels: np.ndarray) -> ExperiencePlan:
        plan = plan_experience(labels, self.num_classes, self.options, self.memory)
        self.part.begin(self.cwr.begin(plan.cur))
        return plan

    def end_experience(self, plan: ExperiencePlan, labels: np.ndarray) -> None:
        self.cwr.consolidate(self.part.head_values(), plan.cur)
        if self.memory is not None:
            self.memory.update(LazyLatents(self, self._images), labels, self.options.replay_update, self.replay_rng)
        self.part.end(self.cwr.inference_rows())

    def _learn(self, images, labels) -> dict:
        t0 = time.perf_counter()
        self._images = images  # the new latents are computed step by step, and for the memory's picks
        try:
            plan, losses = self.run_experience(labels, lambda idx: self.latents(images[idx]), self.step_seconds.append)
        finally:
            del self._images
        entry = {"experience": self.experiences, "patterns": int(plan.patterns),
                 "replayed_per_step": int(plan.n_replay), "steps": int(plan.steps * self.options.epochs),
                 "mean_loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0}
        self.experiences += 1
        self.log.append(entry)
        if self.state_path is not None:
            self.save()
        return entry

    def annotate(self, **entries) -> None:
        """Add ``entries`` (JSON-able) to the last experience's log entry, e.g. its test accuracy, and persist."""
        if not self.log:
            raise ValueError("no experience to annotate yet")
        self.log[-1].update(entries)
        if self.state_path is not None:
            self.save(keep_previous=False)  # the same experience: .prev stays the one before it

    def predict(self, images, batch_size: int | None = None) -> np.ndarray:
        """Class indices (N,), ``batch_size`` images at a time (default: the learning minibatch's size)."""
        return self.model.predict(images, self.backend, batch_size or self.options.batch_size)

    # -- memory -----------------------------------------------------------------------------------------------------

    def nbytes(self) -> dict:
        """Bytes of every buffer the learner holds, at the precision it holds them in."""
        frozen = 0
        for op in self.model.frozen_ops:
            if isinstance(op, Block):
                frozen += op.weight_bytes(self.backend)
            elif isinstance(op, FoldedStem):
                frozen += op.weight.nbytes + op.bias.nbytes
            elif op.in_threshold is not None:
                frozen += op.in_threshold.nbytes
        c = self.num_classes
        trainable = self.part.nbytes()
        out = {"frozen_weights": frozen, **trainable, "trainable_state": sum(trainable.values()),
               "consolidated_rows": self.cwr.nbytes(4)}
        if self.memory is not None:
            out["replay_patterns"] = self.memory.pattern_bytes()
            out["replay_labels_and_scales"] = self.memory.nbytes() - self.memory.pattern_bytes()
            out["replay_memory"] = self.memory.nbytes()  # the two above together (the simulation's key)
        # one step's activations: the frozen part's largest op (input + output) on a minibatch of new images, and
        # the training step's arrays at their peak (measured on the first full step; before it, an estimate)
        step = self.step_peak_bytes
        if step is None:
            step = self._full_batch * (int(np.prod(self.latent_shape)) + 2 * c) * 4 if isinstance(self.part, HeadPart) \
                else self.part.peak_step_bytes(self._full_batch, self.latent_shape)
        out["peak_activations"] = self.frozen_peak_bytes + step
        out["learning_state"] = out["trainable_state"] + out["consolidated_rows"] + out.get("replay_patterns", 0) \
            + out.get("replay_labels_and_scales", 0)
        out["total"] = out["frozen_weights"] + out["learning_state"] + out["peak_activations"]
        return out

    # -- state ------------------------------------------------------------------------------------------------------

    def state(self) -> tuple[dict, dict]:
        """(meta, arrays) of everything needed to continue exactly where the learner is."""
        arrays = {"cwr.cw": self.cwr.cw.copy(), "cwr.past": self.cwr.past.copy(),
                  "head.inference": np.asarray(self.head_op.weight, np.float32), **self.part.state()}
        meta = {"bnncl_version": __version__, "model_sha256": self.model.meta.get("sha256"),
                "model_path": str(self.model.path), "options": self.options.to_dict(), "experiences": self.experiences,
                "log": [dict(e) for e in self.log],
                "rng": {"shuffle": _rng_state(self.shuffle_rng), "replay": _rng_state(self.replay_rng),
                        "quantizer": _rng_state(self.quant_rng)}}
        if self.memory is not None:
            mem_arrays, mem_meta = self.memory.state()
            arrays.update({f"replay.{k}": v for k, v in mem_arrays.items()})
            meta["replay"] = mem_meta
        return meta, arrays

    def save(self, path: str | os.PathLike | None = None, keep_previous: bool = True) -> None:
        """Write the state atomically; the file it replaces stays as ``<path>.prev`` (the generation before), unless
        ``keep_previous`` is False."""
        from bnncl.device.modelfile import write_container

        path = Path(path or self.state_path)
        meta, arrays = self.state()
        if keep_previous and path.exists():
            prev, tmp = path.with_name(path.name + ".prev"), path.with_name(f".{path.name}.prev.tmp")
            if tmp.exists():
                tmp.unlink()
            os.link(path, tmp)  # a second name for the current state, then renamed over the old .prev atomically
            os.replace(tmp, prev)
            # where .prev already was a name of the same file (a save killed right after this step), the rename
            # does nothing and leaves tmp: remove it
            tmp.unlink(missing_ok=True)
        write_container(path, STATE_FORMAT, STATE_VERSION, meta, arrays)

    @staticmethod
    def _read_state(path) -> tuple[dict, dict]:
        from bnncl.device.modelfile import read_container

        try:
            return read_container(path, STATE_FORMAT, STATE_VERSION, LearnerStateError, "learner state file")
        except LearnerStateError as e:
            prev = Path(str(path) + ".prev")
            hint = f"; the state before it is kept in {prev}" if prev.is_file() else ""
            raise LearnerStateError(f"{e} (the file is left as it is{hint})") from None

    @staticmethod
    def _saved_options(path, meta) -> LearnOptions:
        try:
            return LearnOptions.from_dict(meta["options"])
        except (KeyError, TypeError, ConfigError) as e:
            raise LearnerStateError(f"{path}: corrupt learner settings ({reason(e)})") from None

    def _restore(self, path, meta: dict, arrays: dict) -> None:
        if meta.get("model_sha256") != self.model.meta.get("sha256"):
            raise LearnerStateError(f"{path}: this state belongs to another model ({meta.get('model_path')}), not "
                                    f"{self.model.path}")
        try:
            self.cwr.load_state({"cw": arrays["cwr.cw"], "past": arrays["cwr.past"]})
            head = arrays["head.inference"]
            if head.shape != self.head_op.weight.shape:
                raise ValueError(f"head of shape {head.shape}")
            self.head_op.weight = head.astype(np.float32)
            self.part.load_state(arrays)
            if self.memory is not None:
                self.memory.load_state({k[len("replay."):]: v for k, v in arrays.items() if k.startswith("replay.")},
                                       meta["replay"])
            _set_rng_state(self.shuffle_rng, meta["rng"]["shuffle"])
            _set_rng_state(self.replay_rng, meta["rng"]["replay"])
            _set_rng_state(self.quant_rng, meta["rng"]["quantizer"])
            experiences, log = meta["experiences"], meta["log"]
            if type(experiences) is not int or experiences < 0 or not isinstance(log, list) \
                    or len(log) != experiences:
                raise ValueError(f"{experiences!r} experiences consumed with a log of "
                                 f"{len(log) if isinstance(log, list) else 'no'} entries")
            self.experiences, self.log = experiences, list(log)
        except (KeyError, TypeError, ValueError, ConfigError, LearnerStateError) as e:
            raise LearnerStateError(f"{path}: corrupt learner state ({type(e).__name__}: {reason(e)})") from None

