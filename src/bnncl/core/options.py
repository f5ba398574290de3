"""The options of a continual-learning run (``[learn]`` in a config), shared by the torch simulation and the device
learner. NumPy only: the device runtime imports it without torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from bnncl.core.affine import FLOAT_BITS, GRIDS, ROUNDINGS, check_bits
from bnncl.core.errors import ConfigError
from bnncl.core.memory import STORAGES, UPDATE_RULES
from bnncl.core.typecheck import check_fields, check_size

RANGES = ("dynamic", "fixed")  # quantizer ranges: min/max per call, or calibrated on experience 0 (work A)
QBIN_UPDATES = ("rebinarize", "plain")

STRATEGIES = ("naive", "cwr", "ar1", "joint")
MIXES = ("proportional", "fixed")


@dataclass
class LearnOptions:
    strategy: str = "ar1"
    # None: "head" for cwr, else the model's binary boundary or its last stage's first block
    lr_layer: str | None = None
    epochs: int = 4
    lr: float = 0.01
    batch_size: int = 50  # patterns per SGD step (new + replayed with mix "proportional"; new only with "fixed")
    replay_size: int = 1500
    replay_storage: str = "bits"
    replay_update: str = "balanced"
    replay_mix: str = "fixed"  # B's code: 50 new + 128 replayed per step (BENCHMARKS.md compares the mixes)
    replay_batch: int = 128  # replayed patterns per step with mix "fixed"
    # Hybrid quantization of the learning step (docs/method.md §5); 32 = float32, no quantization.
    qf: int = 32  # forward bits: inputs, weights and outputs of trainable ops, softmax, logit gradient
    qb: int = 32  # backward bits: gradients and stored trainable parameters (at least qf)
    qbin: int = 32  # gradients and latent weights of trainable binary convs
    q_ranges: str = "dynamic"  # "dynamic" (min/max per call) or "fixed" (calibrated on experience 0, work A)
    q_rounding: str = "nearest"  # or "stochastic"
    # Where the quantizers put their levels: "affine" (docs/method.md's float form, m + k (M - m) / (2^b - 1)) or
    # "integer" (the integer form's (q - Z) S, what the device learner computes with).
    q_grid: str = "affine"
    # Update of the binary convs' latent weights under quantized back-propagation: "rebinarize" (work B's code,
    # W <- clip(Q_qbin(sign(W) - lr g), -1, 1)) or "plain" (W <- clip(Q_qbin(W - lr g), -1, 1)).
    qbin_update: str = "rebinarize"
    handwritten: bool = False  # train blocks above the LR layer with the hand-written backward even at 32 bits
    seed: int = 0

    def __post_init__(self):
        check_fields(self)  # types first: "epochs = 1.5" is refused, not compared
        for name, value, valid in (("strategy", self.strategy, STRATEGIES),
                                   ("replay_storage", self.replay_storage, STORAGES),
                                   ("replay_update", self.replay_update, UPDATE_RULES),
                                   ("replay_mix", self.replay_mix, MIXES)):
            if value not in valid:
                raise ConfigError(f"unknown {name} {value!r} (valid: {', '.join(valid)})")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
            check_size("", name, getattr(self, name))
        if self.replay_size < 0 or self.replay_batch < 0:
            raise ConfigError("replay_size and replay_batch must be >= 0")
        check_size("", "replay_size", self.replay_size, 0)
        check_size("", "replay_batch", self.replay_batch, 0)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")
        for name in ("qf", "qb", "qbin"):
            check_bits(name, getattr(self, name))
        if self.qb < self.qf:
            raise ConfigError(f"qb (backward bits, {self.qb}) must be at least qf (forward bits, {self.qf}): the "
                              "update step is where the method keeps more precision")
        for name, value, valid in (("q_ranges", self.q_ranges, RANGES), ("q_rounding", self.q_rounding, ROUNDINGS),
                                   ("q_grid", self.q_grid, GRIDS),
                                   ("qbin_update", self.qbin_update, QBIN_UPDATES)):
            if value not in valid:
                raise ConfigError(f"unknown {name} {value!r} (valid: {', '.join(valid)})")

    @property
    def quantized(self) -> bool:
        return min(self.qf, self.qb, self.qbin) < FLOAT_BITS

    @classmethod
    def from_dict(cls, d: dict) -> "LearnOptions":
        valid = [f.name for f in fields(cls)]
        bad = sorted(set(d) - set(valid))
        if bad:
            raise ConfigError(f"unknown learning option {', '.join(bad)} (valid: {', '.join(valid)})")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
