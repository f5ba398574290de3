"""Checkpoints of the torch side: one file holding the architecture, the weights and, for resuming, the optimizer.

Written atomically (temporary file, fsync, rename), so an interrupted save leaves the previous checkpoint intact.
Loaded with ``weights_only=True``: a checkpoint is data, never code. A SHA-256 over everything it holds (every
tensor's name, dtype, shape and bytes, every other value) is stored with it and checked on load, so a damaged byte
inside a tensor is refused rather than trained or exported from (checkpoints written without it still load).
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import torch

from bnncl.core.atomic import atomic_write_bytes
from bnncl.core.errors import CheckpointError, ConfigError
from bnncl.models import BackboneConfig, BinaryResNet, build_model

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
    payload["sha256"] = payload_checksum(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    try:  # refuse now what load_model would refuse later (weights_only admits tensors and plain containers only)
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot save, an extra entry is not plain data "
                              f"({str(e).splitlines()[0]})") from None
    atomic_write_bytes(path, buf.getvalue())


def payload_checksum(payload: dict) -> str:
    """SHA-256 of a checkpoint's content in a fixed order: dict keys sorted, every tensor by name, dtype, shape and
    bytes, every other value by its repr; the ``sha256`` entry itself left out."""
    h = hashlib.sha256()

    def walk(value, name: str) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                if not (name == "" and key == "sha256"):
                    walk(value[key], f"{name}/{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{name}/{i}")
        elif isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{name}\0{value!r}\0".encode())

    walk(payload, "")
    return h.hexdigest()


def is_checkpoint_file(path: str | os.PathLike) -> bool:
    """A torch zip archive (what ``save_checkpoint`` writes), judged by its entries alone: whether a file may be
    overwritten by a checkpoint."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("/data.pkl") for name in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate the envelope of a checkpoint; errors name the file and the problem."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt, or another format: not a "
                              "zip archive)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle; its words are not the user's
        if "weights only" in str(e).lower() or "unsupported global" in str(e).lower():
            raise CheckpointError(f"{path}: not a bnncl checkpoint (it holds objects other than plain data, which "
                                  "are never loaded)") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bnncl checkpoint (no '{FORMAT}' header)")
    if "sha256" in payload and payload["sha256"] != payload_checksum(payload):
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint was altered or damaged after it was written")
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
    except (ConfigError, TypeError, ValueError) as e:
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
