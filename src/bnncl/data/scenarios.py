"""Continual-learning scenarios: factories that turn a labelled dataset into a stream of experiences plus a fixed
test set (docs/method.md §6). NumPy only, so the device runtime can replay the same stream.

* **NC** (new classes): experiences of disjoint classes, class order drawn from the seed; optionally a larger first
  experience of ``first`` base classes.
* **NI** (new instances): every experience holds new instances of every class; optionally each experience is seen
  under its own domain shift (rotation, contrast or noise growing along the stream), and the test set mixes all of
  them, so NI is not just i.i.d. shards.
* **NIC** (NICv2-style): a first experience of ``first`` classes, then many small single-class batches mixing new
  instances of known classes and new classes.
* **CORe50**: the official scenarios and runs of ``LUP.pkl``.

Every factory is deterministic given its seed and keeps the dataset's label numbering.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from bnncl.core.errors import ConfigError, DataError
from bnncl.data.arrays import LabelledArrays

SHIFTS = ("none", "rotation", "contrast", "noise")


@dataclass(frozen=True)
class Experience:
    index: int
    data: LabelledArrays

    @property
    def classes(self) -> list[int]:
        return sorted(set(self.data.y.tolist()))

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Stream:
    name: str
    experiences: tuple[Experience, ...]
    test: LabelledArrays
    info: dict = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.test.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.test.input_shape

    def __len__(self) -> int:
        return len(self.experiences)

    def describe(self) -> str:
        sizes = [len(e) for e in self.experiences]
        return (f"{self.name}: {len(sizes)} experiences ({sizes[0]} patterns first, "
                f"{min(sizes[1:], default=0)}-{max(sizes[1:], default=0)} after), test {len(self.test)}")


def _experiences(data: LabelledArrays, groups: list[np.ndarray], label: str) -> tuple[Experience, ...]:
    return tuple(Experience(i, data.subset(np.sort(g), f"{data.name} {label} {i}")) for i, g in enumerate(groups))


def _class_order(data: LabelledArrays, seed: int) -> list[int]:
    present = np.unique(data.y)
    return np.random.default_rng(seed).permutation(present).tolist()


def nc(train: LabelledArrays, test: LabelledArrays, n_experiences: int = 5, first: int | None = None,
       seed: int = 0, order: list[int] | None = None) -> Stream:
    """Class-incremental: ``first`` classes (or an equal share) in experience 0, the rest split evenly.

    The class order comes from ``seed``, or is given as ``order`` (e.g. the base classes a checkpoint was pretrained
    on first)."""
    if order is None:
        order = _class_order(train, seed)
    else:
        order = [int(c) for c in order]
        present = sorted(np.unique(train.y).tolist())
        if sorted(order) != present:
            raise ConfigError(f"NC: order must list each class present exactly once ({present}), got {order}")
    k = len(order)
    if not 1 <= n_experiences <= k:
        raise ConfigError(f"NC: n_experiences must be in 1..{k} (classes present), got {n_experiences}")
    if first is None:
        if k % n_experiences:
            raise ConfigError(f"NC: {k} classes do not split evenly into {n_experiences} experiences; give 'first'")
        sizes = [k // n_experiences] * n_experiences
    else:
        rest, n_rest = k - first, n_experiences - 1
        if not 1 <= first < k or n_rest < 1 or rest % n_rest:
            raise ConfigError(f"NC: after {first} first classes, {rest} classes do not split evenly into "
                              f"{n_rest} experiences")
        sizes = [first] + [rest // n_rest] * n_rest
    bounds = np.cumsum([0] + sizes)
    class_groups = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    groups = [np.flatnonzero(np.isin(train.y, g)) for g in class_groups]
    return Stream(f"nc{n_experiences}", _experiences(train, groups, "nc experience"), test,
                  {"scenario": "nc", "class_order": order, "classes_per_experience": class_groups, "seed": seed})


def _stratified_shards(y: np.ndarray, n: int, rng: np.random.Generator,
                       index: np.ndarray | None = None) -> list[np.ndarray]:
    """Split ``index`` (default all) into ``n`` shards holding an equal share of every class."""
    index = np.arange(len(y)) if index is None else index
    shards = [[] for _ in range(n)]
    for c in np.unique(y[index]):
        idx = rng.permutation(index[y[index] == c])
        for s, part in enumerate(np.array_split(idx, n)):
            shards[s].append(part)
    return [np.concatenate(s) for s in shards]


def shift_images(x: np.ndarray, kind: str, amount: float, rng: np.random.Generator) -> np.ndarray:
    """One domain shift applied to uint8 NHWC images. ``amount`` in [0, 1] scales its strength.

    rotation: by ``amount`` x 45 degrees (nearest neighbour, border filled with 0); contrast: pixel values pulled
    towards the image mean by ``amount`` x 60 %; noise: Gaussian, sigma ``amount`` x 40 grey levels.
    """
    if kind == "none" or amount == 0:
        return x
    if kind == "rotation":
        n, h, w, c = x.shape
        a = np.deg2rad(45.0 * amount)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        # inverse map: the source pixel each output pixel comes from
        sy = np.rint(cy + (yy - cy) * np.cos(a) - (xx - cx) * np.sin(a)).astype(int)
        sx = np.rint(cx + (yy - cy) * np.sin(a) + (xx - cx) * np.cos(a)).astype(int)
        inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
        out = np.zeros_like(x)
        out[:, inside] = x[:, sy[inside], sx[inside]]
        return out
    if kind == "contrast":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        return np.clip(mean + (x - mean) * (1 - 0.6 * amount), 0, 255).round().astype(np.uint8)
    if kind == "noise":
        return np.clip(x + rng.normal(0, 40 * amount, x.shape), 0, 255).round().astype(np.uint8)
    raise ConfigError(f"unknown domain shift {kind!r} (valid: {', '.join(SHIFTS)})")


def ni(train: LabelledArrays, test: LabelledArrays, n_experiences: int = 5, shift: str = "none",
       seed: int = 0) -> Stream:
    """New instances: ``n_experiences`` stratified shards; with ``shift``, experience i is seen at strength
    i / (n - 1) and every test image at the strength of a random experience."""
    if shift not in SHIFTS:
        raise ConfigError(f"unknown domain shift {shift!r} (valid: {', '.join(SHIFTS)})")
    counts = np.bincount(train.y)
    smallest = int(counts[counts > 0].min())
    if not 1 <= n_experiences <= smallest:  # every experience must hold every class
        raise ConfigError(f"NI: n_experiences must be in 1..{smallest} (patterns of the smallest class), "
                          f"got {n_experiences}")
    rng = np.random.default_rng(seed)
    groups = _stratified_shards(train.y, n_experiences, rng)
    strengths = np.linspace(0, 1, n_experiences) if n_experiences > 1 else np.zeros(1)
    exps = []
    for i, g in enumerate(groups):
        part = train.subset(np.sort(g), f"{train.name} ni experience {i}")
        if shift != "none":
            part = LabelledArrays(shift_images(part.x, shift, strengths[i], rng), part.y, part.class_names, part.name)
        exps.append(Experience(i, part))
    if shift != "none":
        which = rng.integers(0, n_experiences, len(test))
        x = test.x.copy()
        for i in range(n_experiences):
            x[which == i] = shift_images(test.x[which == i], shift, strengths[i], rng)
        test = LabelledArrays(x, test.y, test.class_names, f"{test.name} ({shift} of every experience)")
    return Stream(f"ni{n_experiences}" + (f"-{shift}" if shift != "none" else ""), tuple(exps), test,
                  {"scenario": "ni", "shift": shift, "strengths": strengths.tolist(), "seed": seed})


def nic(train: LabelledArrays, test: LabelledArrays, first: int = 2, n_batches: int = 40, first_fraction: float = 0.5,
        seed: int = 0) -> Stream:
    """NICv2-style: experience 0 holds ``first_fraction`` of the instances of ``first`` classes; the rest of the data
    (the other instances of those classes and every other class) follows as ``n_batches`` single-class batches in
    random order, so new classes and new instances of known classes interleave."""
    order = _class_order(train, seed)
    k = len(order)
    if not 1 <= first < k:
        raise ConfigError(f"NIC: first must be in 1..{k - 1}, got {first}")
    if not 0 < first_fraction < 1:
        raise ConfigError(f"NIC: first_fraction must be in (0, 1), got {first_fraction}")
    if n_batches < k - first:
        raise ConfigError(f"NIC: n_batches must be at least the {k - first} classes not in the first experience")
    rng = np.random.default_rng(seed)
    exp0, rest = [], {}
    for c in order:
        idx = rng.permutation(np.flatnonzero(train.y == c))
        if c in order[:first]:
            cut = int(round(first_fraction * len(idx)))
            exp0.append(idx[:cut])
            idx = idx[cut:]
        rest[c] = idx
    # Batches per class proportional to what is left of it (at least one each), then all batches shuffled.
    left = np.array([len(rest[c]) for c in order], dtype=float)
    per_class = np.maximum(1, np.floor(left / left.sum() * n_batches)).astype(int)
    while per_class.sum() < n_batches:
        per_class[np.argmax(left / per_class)] += 1
    while per_class.sum() > n_batches:
        per_class[np.argmax(np.where(per_class > 1, per_class, 0))] -= 1
    batches = [b for c, m in zip(order, per_class) for b in np.array_split(rest[c], m) if len(b)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    groups = [np.concatenate(exp0)] + batches
    return Stream(f"nic{len(batches)}", _experiences(train, groups, "nic batch"), test,
                  {"scenario": "nic", "class_order": order, "first_classes": order[:first], "seed": seed})


def core50(root, scenario: str = "nicv2_391", run: int = 0, labels: str = "category") -> Stream:
    """The official CORe50 scenario and run: the training batches of ``LUP.pkl`` and its test batch."""
    from bnncl.data.core50 import Core50

    c = Core50(root, scenario, run, labels)
    exps = tuple(Experience(i, b) for i, b in enumerate(c.train_batches()))
    return Stream(f"core50-{scenario}-run{run}", exps, c.test(), {"scenario": f"core50 {scenario}", "run": run})


SCENARIO_FACTORIES = {"nc": nc, "ni": ni, "nic": nic}


def scenario_options(factory) -> list[str]:
    """The options a scenario factory takes, besides its data (train/test arrays or the CORe50 root)."""
    return [p for p in inspect.signature(factory).parameters if p not in ("train", "test", "root")]


def make_stream(scenario: str, train: LabelledArrays, test: LabelledArrays, **options) -> Stream:
    """Build a named scenario, refusing unknown option names with the valid ones listed."""
    try:
        factory = SCENARIO_FACTORIES[scenario]
    except KeyError:
        raise ConfigError(f"unknown scenario {scenario!r} (valid: {', '.join(SCENARIO_FACTORIES)}, core50)") from None
    valid = scenario_options(factory)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ConfigError(f"scenario {scenario!r} has no option {', '.join(bad)} (valid: {', '.join(valid)})")
    if len(train) == 0:
        raise DataError(f"{train.name}: no training data")
    return factory(train, test, **options)
