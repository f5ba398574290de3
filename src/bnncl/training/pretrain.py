"""Pretraining of a backbone in float with straight-through estimators (the "base" a vendor ships).

Determinism: the weights are initialised from ``seed``; epoch ``e`` draws its shuffle and augmentation from a
generator seeded with ``(seed, e)``. A run resumed from the checkpoint of epoch ``e`` therefore continues exactly as
the uninterrupted run would have.

Distributed: under ``torchrun --nproc_per_node N`` (WORLD_SIZE > 1) each process joins a gloo group, wraps the model
in DistributedDataParallel and takes every N-th example of the shared shuffle; ``batch_size`` is per process. Only
rank 0 shows progress and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from bnncl.binarizers import clip_latent_weights
from bnncl.checkpoint import check_architecture, read_checkpoint, save_checkpoint
from bnncl.core.errors import CheckpointError, ConfigError
from bnncl.core.typecheck import check_fields, check_size
from bnncl.data import LabelledArrays, load_dataset
from bnncl.models import BackboneConfig, BinaryResNet, build_model, normalize_tensor, preset_config, preset_for_shape
from bnncl.training.augment import AUGMENTATION, random_crop_flip
from bnncl.training.evaluate import evaluate

# Options that define what is trained; a resumed run must use the same ones.
_IDENTITY = ("dataset", "dataset_options", "classes", "fraction", "seed", "epochs", "batch_size", "lr", "augment",
             "preset", "binary_boundary", "subset")


@dataclass
class PretrainOptions:
    dataset: str = "fashion-mnist"
    data: str | None = None  # directory of the dataset files; None = the dataset's default
    dataset_options: dict = field(default_factory=dict)  # e.g. CORe50 scenario/run/labels
    preset: str | None = None  # None = the preset matching the input shape
    binary_boundary: str | None = None  # block whose input is binarized in full (where 1-bit latent replay goes)
    subset: str | None = None  # names the training subset when the caller passes the data (part of the identity)
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    classes: list[int] | None = None  # pretrain on these classes only (base classes)
    fraction: float | None = None  # pretrain on this stratified fraction of the instances
    augment: bool = True
    out: str = "runs/pretrain/model.pt"
    resume: bool = False
    progress: bool = True
    max_steps_per_epoch: int | None = None  # for smoke tests: cut every epoch short

    def __post_init__(self):
        check_fields(self)  # types first: "epochs = 1.5" is refused, not compared
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        check_size("", "epochs", self.epochs)
        check_size("", "batch_size", self.batch_size)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a positive number, got {self.lr}")

    def identity(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: d[k] for k in _IDENTITY}


def _dist_context() -> tuple[int, int]:
    """(rank, world size); joins the gloo group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def load_training_data(opts: PretrainOptions) -> tuple[LabelledArrays, LabelledArrays]:
    """The training subset (classes/fraction) and the test split restricted to the same classes."""
    train = load_dataset(opts.dataset, opts.data, "train", **opts.dataset_options)
    test = load_dataset(opts.dataset, opts.data, "test", **opts.dataset_options)
    train = train.select(classes=opts.classes, fraction=opts.fraction, seed=opts.seed)
    if opts.classes is not None:
        test = test.select(classes=opts.classes)
    return train, test


def model_config(opts: PretrainOptions, train: LabelledArrays) -> BackboneConfig:
    preset = opts.preset or preset_for_shape(train.input_shape)
    config = preset_config(preset, train.num_classes, binary_boundary=opts.binary_boundary)
    if config.input_shape != train.input_shape:
        shape = "x".join(map(str, train.input_shape))
        raise ConfigError(f"preset {preset!r} takes {config.describe()}, but {train.name} images are {shape}")
    return config


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _average_buffers(model: torch.nn.Module, world: int) -> None:
    """Average BatchNorm running statistics over the ranks.

    DDP keeps parameters equal, but each rank updates its running mean/variance from its own shard in the last
    forward pass; averaging them makes every rank (and the checkpoint) hold the same statistics over all shards.
    """
    for name, buf in model.named_buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf /= world


def pretrain(opts: PretrainOptions,
             data: tuple[LabelledArrays, LabelledArrays] | None = None) -> tuple[BinaryResNet, dict]:
    """Train, checkpoint every epoch, evaluate on the test split (rank 0).

    Returns the trained model and a JSON-able summary: history per epoch and, on rank 0, the test report.
    """
    rank, world = _dist_context()
    # ``data``: (train, test) chosen by the caller, e.g. experience 0 of a stream; ``opts.subset`` must then name it.
    train, test = data if data is not None else load_training_data(opts)
    config = model_config(opts, train)
    torch.manual_seed(opts.seed)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    per_rank = len(train) // world
    steps_per_epoch = math.ceil(per_rank / opts.batch_size)
    if opts.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, opts.max_steps_per_epoch)
    total_steps = opts.epochs * steps_per_epoch
    # Cosine decay to zero over the whole run, stepped every batch.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))

    out = Path(opts.out)
    if rank == 0 and out.parent.is_dir():  # temporary files of a checkpoint write a kill interrupted: never the file
        for stale in out.parent.glob(f".{out.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    start_epoch, history = 0, []
    if opts.resume and out.exists():
        payload = read_checkpoint(out)
        check_architecture(out, BackboneConfig.from_dict(payload["config"]), config)
        saved = payload.get("meta", {}).get("options", {})
        if any(saved.get(k) != v for k, v in opts.identity().items()):  # a key added later reads as None
            diff = ", ".join(f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in opts.identity().items() if saved.get(k) != v)
            raise CheckpointError(f"{out}: cannot resume, the training options changed ({diff})")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        start_epoch, history = payload["epoch"], payload["meta"]["history"]

    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    pad, flip = AUGMENTATION.get(opts.dataset, (0, False)) if opts.augment else (0, False)
    for epoch in range(start_epoch, opts.epochs):
        net.train()
        gen = _epoch_generator(opts.seed, epoch)
        order = torch.randperm(len(train), generator=gen).numpy()[rank::world][:per_rank]
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{opts.epochs}",
                   disable=not opts.progress or rank != 0, unit="batch", leave=False)
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for step in bar:
            idx = np.sort(order[step * opts.batch_size : (step + 1) * opts.batch_size])
            x = normalize_tensor(torch.from_numpy(np.ascontiguousarray(train.x[idx])))
            y = torch.from_numpy(train.y[idx])
            if pad or flip:
                x = random_crop_flip(x, pad, flip, gen)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            clip_latent_weights(model)
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if world > 1:
            _average_buffers(model, world)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                        "seconds": seconds, "images_per_second": seen * world / seconds})
        if rank == 0:
            meta = {"options": opts.identity(), "history": history, "train_set": train.name,
                    "class_names": list(train.class_names), "trained_classes": sorted(set(train.y.tolist()))}
            save_checkpoint(out, model, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            epoch=epoch + 1, meta=meta)
            if opts.progress:
                h = history[-1]
                tqdm.write(f"epoch {h['epoch']}/{opts.epochs}: loss {h['loss']:.4f}, train accuracy "
                           f"{h['train_accuracy']:.4f}, {h['seconds']:.0f} s, {h['images_per_second']:.0f} images/s")
    result = {"checkpoint": str(out), "architecture": config.describe(), "epochs": opts.epochs, "history": history,
              "train_images": len(train), "world_size": world}
    if rank == 0:
        result["test"] = evaluate(model, test)
    return model, result
