"""Checkpoints of the torch side: one file holding the architecture, the weights and, for resuming, the optimizer.

Written atomically (temporary file, fsync, rename), so an interrupted save leaves the previous checkpoint intact.
Loaded with ``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from .atomic import atomic_write_bytes
from .errors import CheckpointError, ConfigError, reason
from .models import BackboneConfig, BinaryResNet, build_model

FORMAT = "bnncl-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: BinaryResNet, **extra) -> None:
    """Save ``model`` (its config and state dict) plus any ``extra`` entries (optimizer state, epoch, meta...)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "model": model.state_dict(),
        **extra,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    try:  # refuse now what load_model would refuse later (weights_only admits tensors and plain containers only)
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot save, an extra entry is not plain data "
                              f"({str(e).splitlines()[0]})") from None
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate the envelope of a checkpoint; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {reason(e)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bnncl checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')} is not supported (this bnncl reads version {VERSION})"
        )
    for key in ("config", "model"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint has no '{key}' entry")
    return payload


def load_model(path: str | os.PathLike, expect: BackboneConfig | None = None) -> tuple[BinaryResNet, dict]:
    """Rebuild the model stored in ``path``; if ``expect`` is given, the architectures must match.

    Returns ``(model, payload)``; the model is in eval mode.
    """
    payload = read_checkpoint(path)
    try:
        config = BackboneConfig.from_dict(payload["config"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid architecture in checkpoint ({e})") from None
    if expect is not None:
        check_architecture(path, config, expect)
    model = build_model(config)
    try:
        result = model.load_state_dict(payload["model"], strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise CheckpointError(f"{path}: weights do not fit the architecture it names ({detail})") from None
    problems = list(result.missing_keys) + list(result.unexpected_keys)
    if problems:
        raise CheckpointError(f"{path}: weights do not fit the architecture it names ({len(problems)} keys differ, "
                              f"e.g. {problems[0]})")
    model.eval()
    return model, payload


def check_architecture(path, found: BackboneConfig, expected: BackboneConfig) -> None:
    """Same layers and shapes (the preset name alone may differ)."""
    a, b = found.to_dict(), expected.to_dict()
    a.pop("name"), b.pop("name")
    if a != b:
        diff = ", ".join(f"{k} {a[k]} != {b[k]}" for k in a if a[k] != b[k])
        raise CheckpointError(f"{path}: checkpoint is for another architecture ({diff})")
