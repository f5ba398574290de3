"""Continual-learning strategies in the torch simulation: the experience protocol (:mod:`bnncl.core.protocol`) as a
template with named hooks, and plugins (Avalanche style).

The template (:class:`Strategy`) cuts the model at the latent-replay (LR) layer, keeps the part below frozen (BN in
inference mode; latents computed once per experience, the frozen part never changes), and trains the part above with
plain SGD (no momentum, learning rate reset each experience, docs/method.md §6). The loop, the replay mix and the
random generators are the protocol's, the same as the device learner's. Plugins change what happens at the hooks:

* ``before_experience(strategy, exp)`` / ``after_experience(strategy, exp)``
* ``before_step(strategy, x, y) -> (x, y)`` / ``after_step(strategy)``
* ``before_eval(strategy)``

Strategies are plugin sets: ``naive`` (none: the lower bound), ``cwr`` (CWR*, head only: work A), ``ar1`` (latent
replay + CWR*, training above the LR layer: work B / AR1*), ``joint`` (every experience at once: the upper bound).
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from bnncl.binarizers import clip_latent_weights
from bnncl.core.cwr import CWRStar
from bnncl.core.errors import ConfigError
from bnncl.core.memory import LatentMemory
from bnncl.core.options import LearnOptions
from bnncl.core.protocol import (
    ExperienceLoop,
    ExperiencePlan,
    backbone_lr_layer,
    check_lr_layer,
    default_lr_layer,
    generator,
    plan_experience,
)
from bnncl.data.scenarios import Experience
from bnncl.layers import LearnableBias
from bnncl.models import BinaryResNet, normalize_tensor
from bnncl.simulation.steps import BackpropHybridStep, HeadHybridStep


def model_lr_layer(model: BinaryResNet, strategy: str) -> str:
    """The strategy's default LR layer in ``model`` (:func:`bnncl.core.protocol.default_lr_layer`)."""
    return default_lr_layer(strategy, backbone_lr_layer(model.config.binary_boundary, model.config.stages))


def resolve_lr_layer(model: BinaryResNet, options: LearnOptions) -> str:
    """The LR layer ``options`` ask for (or the strategy's default), checked against the model's split points."""
    return check_lr_layer(options.lr_layer or model_lr_layer(model, options.strategy), model.split_points)


class Plugin:
    def before_experience(self, strategy: "Strategy", exp: Experience) -> None: ...
    def before_step(self, strategy: "Strategy", x: torch.Tensor, y: torch.Tensor): return x, y
    def after_step(self, strategy: "Strategy") -> None: ...
    def after_experience(self, strategy: "Strategy", exp: Experience) -> None: ...
    def before_eval(self, strategy: "Strategy") -> None: ...
    def nbytes(self) -> dict: return {}


class CWRPlugin(Plugin):
    """CWR* on the bias-free head (docs/method.md §3): reset rows before an experience, consolidate after it."""

    def __init__(self, num_classes: int, feature_dim: int):
        self.cwr = CWRStar(num_classes, feature_dim)

    def _head(self, learner):
        return learner.model.layers["head"].weight

    def before_experience(self, learner, exp):
        with torch.no_grad():
            self._head(learner).copy_(torch.from_numpy(self.cwr.begin(learner.cur)))

    def after_experience(self, learner, exp):
        with torch.no_grad():
            head = self._head(learner)
            self.cwr.consolidate(head.numpy().astype(np.float64), learner.cur)
            head.copy_(torch.from_numpy(self.cwr.inference_rows()))

    def nbytes(self):
        return {"consolidated_rows": self.cwr.nbytes()}


class ReplayPlugin(Plugin):
    """Latent replay (docs/method.md §4): holds the memory the protocol samples every step from (the mix is
    :func:`bnncl.core.protocol.plan_experience`'s); updates it after an experience."""

    def __init__(self, memory: LatentMemory, update: str):
        self.memory, self.update = memory, update

    def after_experience(self, strategy, exp):
        self.memory.update(strategy.new_latents.numpy(), strategy.new_labels, self.update, strategy.replay_rng)

    def nbytes(self):
        return {"replay_memory": self.memory.nbytes()}


class Strategy(ExperienceLoop):
    """The template. ``model`` is trained in place; pass a copy to keep the original."""

    def __init__(self, model: BinaryResNet, options: LearnOptions, plugins: list[Plugin] = (),
                 lr_layer: str | None = None):
        self.model, self.options, self.plugins = model, options, list(plugins)
        self.lr_layer = lr_layer or resolve_lr_layer(model, options)
        self.frozen, self.trainable = model.split(self.lr_layer)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.frozen.eval()
        self.num_classes = model.config.num_classes
        self.shuffle_rng, self.replay_rng = generator(options.seed, "shuffle"), generator(options.seed, "replay")
        self.memory = None  # the replay plugin's, where there is one
        self._test_cache: tuple[np.ndarray, torch.Tensor] | None = None
        self.step_seconds: list[float] = []
        self.hybrid = None
        if options.quantized or options.handwritten:
            if list(dict(self.trainable.named_children())) == ["head"]:  # work A: the head alone
                self.hybrid = HeadHybridStep(model.layers["head"], options.q_f, options.q_b, options.lr,
                                             options.q_ranges, options.q_rounding, options.seed, options.q_grid)
            else:  # work B: quantized back-propagation through the blocks above the LR layer
                if options.q_ranges != "dynamic":
                    raise ConfigError("fixed quantizer ranges are work A's head-only variant; training blocks above "
                                      "the LR layer uses dynamic ranges")
                self.hybrid = BackpropHybridStep(self.trainable, options.q_f, options.q_b, options.q_bin, options.lr,
                                                 options.q_rounding, options.seed, options.q_bin_update, options.q_grid)

    @torch.no_grad()
    def latents(self, x_uint8: np.ndarray, batch_size: int = 500) -> torch.Tensor:
        self.frozen.eval()
        out = [self.frozen(normalize_tensor(torch.from_numpy(np.ascontiguousarray(x_uint8[i:i + batch_size]))))
               for i in range(0, len(x_uint8), batch_size)]
        return torch.cat(out)

    @cached_property  # the frozen part never changes
    def latent_shape(self) -> tuple[int, ...]:
        h, w, c = self.model.config.input_shape
        with torch.no_grad():
            return tuple(self.latents(np.zeros((1, h, w, c), np.uint8)).shape[1:])

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.trainable.parameters() if p.requires_grad]

    # -- the protocol's phases ----------------------------------------------------------------------------------------

    def begin_experience(self, labels: np.ndarray) -> ExperiencePlan:
        plan = plan_experience(labels, self.num_classes, self.options, self.memory)
        self.cur = plan.cur
        for p in self.plugins:
            p.before_experience(self, self.exp)
        self.optimizer = torch.optim.SGD(self.trainable_parameters(), lr=self.options.lr)
        self.trainable.train()
        return plan

    def join(self, x, y, rx, ry):
        return torch.cat([x, torch.from_numpy(rx)]), np.concatenate([y, ry])

    def step(self, x: torch.Tensor, y) -> float | None:
        y = torch.as_tensor(y)
        for p in self.plugins:
            x, y = p.before_step(self, x, y)
        loss = None
        if self.hybrid is not None:
            self.hybrid(x, y)
        else:
            loss = F.cross_entropy(self.trainable(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} in experience {self.exp.index}; lower the "
                                         "learning rate")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            clip_latent_weights(self.trainable)
            loss = loss.item()
        for p in self.plugins:
            p.after_step(self)
        return loss

    def end_experience(self, plan: ExperiencePlan, labels: np.ndarray) -> None:
        if self.hybrid is not None:
            self.hybrid.end_experience()
        for p in self.plugins:
            p.after_experience(self, self.exp)

    def train_experience(self, exp: Experience) -> None:
        """The protocol's loop over ``exp``, whose latents are computed once, before it."""
        self.exp = exp
        self.new_latents = self.latents(exp.data.x)
        self.new_labels = np.asarray(exp.data.y)
        self.run_experience(self.new_labels, lambda idx: self.new_latents[torch.from_numpy(idx)],
                            self.step_seconds.append)

    @torch.no_grad()
    def predict(self, x_uint8: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        for p in self.plugins:
            p.before_eval(self)
        # The frozen part never changes, so the test set's latents are computed once.
        # The cache holds the array itself (not its id, which a later array could reuse).
        if self._test_cache is None or self._test_cache[0] is not x_uint8:
            self._test_cache = (x_uint8, self.latents(x_uint8))
        z = self._test_cache[1]
        self.trainable.eval()
        return torch.cat([self.trainable(z[i:i + batch_size]).argmax(1) for i in range(0, len(z), batch_size)]).numpy()

    def nbytes(self) -> dict:
        n = sum(p.numel() for p in self.trainable_parameters())
        out = {"trainable_parameters_fp32": 4 * n}
        if isinstance(self.hybrid, BackpropHybridStep):
            parts = self.hybrid.state_bytes()
            out.update({f"trainable_{k}": v for k, v in parts.items()})
            out["trainable_state"] = sum(parts.values())
        elif self.hybrid is not None:  # the head alone, stored at q_b bits
            out["trainable_state"] = math.ceil(n * self.options.q_b / 8)
        for p in self.plugins:
            out.update(p.nbytes())
        return out


def _sign_offset(model: BinaryResNet, lr_layer: str) -> np.ndarray | None:
    """The shift the LR layer's consumer applies before its sign (taken once, from the pretrained model), so 1-bit
    replay stores exactly the signs that block's binary conv uses. None where the LR tensor is already ±1."""
    block = model.layers[lr_layer]
    shift = getattr(block, "shift", None)
    if isinstance(shift, LearnableBias):
        return shift.bias.detach().numpy().copy()
    return None


def build_strategy(model: BinaryResNet, options: LearnOptions) -> Strategy:
    """The template with the plugins of ``options.strategy``."""
    lr_layer = resolve_lr_layer(model, options)
    strategy = Strategy(model, options, lr_layer=lr_layer)
    if options.strategy in ("cwr", "ar1"):
        if options.strategy == "ar1":
            shape = strategy.latent_shape
            if options.replay_size < 1:
                raise ConfigError("ar1 needs a replay memory: replay_size must be at least 1")
            memory = LatentMemory(options.replay_size, shape, options.replay_storage,
                                  offset=_sign_offset(model, lr_layer))
            strategy.memory = memory
            strategy.plugins.append(ReplayPlugin(memory, options.replay_update))
        strategy.plugins.append(CWRPlugin(model.config.num_classes, model.feature_dim))
    return strategy
