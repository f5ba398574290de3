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
Q_BIN_UPDATES = ("rebinarize", "plain")

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
    q_f: int = 32  # forward bits: inputs, weights and outputs of trainable ops, softmax, logit gradient
    q_b: int = 32  # backward bits: gradients and stored trainable parameters (at least q_f)
    q_bin: int = 32  # gradients and latent weights of trainable binary convs
    q_ranges: str = "dynamic"  # "dynamic" (min/max per call) or "fixed" (calibrated on experience 0, work A)
    q_rounding: str = "nearest"  # or "stochastic"
    # Where the quantizers put their levels: "affine" (docs/method.md's float form, m + k (M - m) / (2^b - 1)) or
    # "integer" (the integer form's (q - Z) S, what the device learner computes with).
    q_grid: str = "affine"
    # Update of the binary convs' latent weights under quantized back-propagation: "rebinarize" (work B's code,
    # W <- clip(Q_qbin(sign(W) - lr g), -1, 1)) or "plain" (W <- clip(Q_qbin(W - lr g), -1, 1)).
    q_bin_update: str = "rebinarize"
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
        for name in ("q_f", "q_b", "q_bin"):
            check_bits(name, getattr(self, name))
        if self.q_b < self.q_f:
            raise ConfigError(f"q_b (backward bits, {self.q_b}) must be at least q_f (forward bits, {self.q_f}): the "
                              "update step is where the method keeps more precision")
        for name, value, valid in (("q_ranges", self.q_ranges, RANGES), ("q_rounding", self.q_rounding, ROUNDINGS),
                                   ("q_grid", self.q_grid, GRIDS),
                                   ("q_bin_update", self.q_bin_update, Q_BIN_UPDATES)):
            if value not in valid:
                raise ConfigError(f"unknown {name} {value!r} (valid: {', '.join(valid)})")

    @property
    def quantized(self) -> bool:
        return min(self.q_f, self.q_b, self.q_bin) < FLOAT_BITS

    @classmethod
    def from_dict(cls, d: dict) -> "LearnOptions":
        d = renamed_keys(d)
        valid = [f.name for f in fields(cls)]
        bad = sorted(set(d) - set(valid))
        if bad:
            raise ConfigError(f"unknown learning option {', '.join(bad)} (valid: {', '.join(valid)})")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


# Options renamed in 0.2 (q_f, q_b, q_bin beside q_ranges and q_rounding); the old spellings are still read, in
# config files, saved learner states and on the command line, for one release.
OLD_SPELLINGS = {"qf": "q_f", "qb": "q_b", "qbin": "q_bin", "qbin_update": "q_bin_update"}


def renamed_keys(d: dict) -> dict:
    """``d`` with the old spellings of renamed options replaced by the new ones (both given: a ConfigError)."""
    both = [old for old, new in OLD_SPELLINGS.items() if old in d and new in d]
    if both:
        raise ConfigError(f"{both[0]} and {OLD_SPELLINGS[both[0]]} are the same option: give one")
    return {OLD_SPELLINGS.get(k, k): v for k, v in d.items()}
