"""Checkpoints and run directories: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint file is a dict of tensors and plain Python values only (no pickled objects), so loading one never
runs code from the file. ``last.pt`` holds everything a run needs to continue bitwise where it stopped: model,
optimiser, scheduler, every RNG state and the data position. ``best.pt`` holds the model weights of the selected
evaluation and what was measured there.

Files are written to a temporary file in the same directory, fsynced and renamed over the old one, so a crash
while saving leaves the previous checkpoint intact. A checkpoint file starts with a one-line header that holds the
SHA-256 and the length of the ``torch.save`` payload after it::

    DHAN-CHECKPOINT sha256=<64 hex digits> bytes=<payload length>\n<payload>

so a truncated or otherwise damaged file is detected before ``torch.load`` reads it (:class:`CheckpointError`).
``last.pt`` keeps its predecessor as ``last.prev.pt`` (:func:`load_last_checkpoint` falls back to it). Files
written before the header existed (a bare ``torch.save`` zip) still load, without the check.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dhan.errors import UserError
from dhan.faults import fault_point
from dhan.schema import Schema

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
MAGIC = b"DHAN-CHECKPOINT "


class CheckpointError(UserError):
    """A checkpoint file that is missing, truncated, fails its checksum or is not a dhan checkpoint."""


def atomic_write_bytes(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` via a fsynced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def checkpoint_bytes(obj: Mapping[str, Any]) -> bytes:
    """The file content of a checkpoint: the checksum header, then the ``torch.save`` payload."""
    buf = io.BytesIO()
    torch.save(dict(obj), buf)
    payload = buf.getvalue()
    header = MAGIC + f"sha256={hashlib.sha256(payload).hexdigest()} bytes={len(payload)}\n".encode()
    return header + payload


def previous_path(path: Path) -> Path:
    """``last.pt`` -> ``last.prev.pt``: where :func:`atomic_torch_save` keeps the file it replaces."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_torch_save(obj: Mapping[str, Any], path: Path, *, keep_previous: bool = False) -> None:
    """Save a checksummed checkpoint through a temporary file, fsync and rename.

    With ``keep_previous`` the file it replaces becomes :func:`previous_path` (renamed, so it stays intact).
    """
    blob = checkpoint_bytes(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            half = len(blob) // 2
            fh.write(blob[:half])
            fh.flush()
            fault_point("checkpoint_write")
            fh.write(blob[half:])
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and path.is_file():
            os.replace(path, previous_path(path))
            fault_point("checkpoint_rotate")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete the temporary files of writes that a crash interrupted (``.NAME.*.tmp``); the removed paths."""
    removed = []
    for p in directory.glob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _payload(p: Path, blob: bytes) -> bytes:
    """The verified ``torch.save`` payload of a checkpoint file's content (legacy files: the whole file)."""
    if blob.startswith(b"PK"):  # a bare torch.save zip, written before checksums existed
        return blob
    if not blob.startswith(MAGIC):
        raise CheckpointError(f"{p}: not a dhan checkpoint (no DHAN-CHECKPOINT header); the file is damaged")
    end = blob.find(b"\n", 0, 200)
    try:
        header = dict(f.split("=", 1) for f in blob[len(MAGIC) : end].decode("ascii").split())
        digest, size = header["sha256"], int(header["bytes"])
    except (ValueError, KeyError, UnicodeDecodeError):
        raise CheckpointError(f"{p}: damaged checkpoint header; the file is not usable") from None
    payload = blob[end + 1 :]
    if len(payload) != size:
        raise CheckpointError(f"{p}: truncated checkpoint ({len(payload)} of {size} payload bytes)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{p}: checkpoint checksum mismatch (its SHA-256 differs from the header); damaged")
    return payload


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU with ``weights_only=True`` after checking its checksum.

    A missing, truncated or damaged file is a :class:`CheckpointError` (a UserError) that says which.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint; is this a run directory made by `dhan train`?")
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read the checkpoint ({exc.strerror})") from None
    payload = _payload(p, blob)
    try:
        ckpt = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{p}: cannot read the checkpoint ({type(exc).__name__}: {exc}); delete it and retrain"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not a dhan checkpoint of format {CHECKPOINT_FORMAT}")
    return ckpt


def load_last_checkpoint(path: Path) -> tuple[dict[str, Any], Path]:
    """``last.pt``, or ``last.prev.pt`` when ``last.pt`` is missing or damaged: ``(checkpoint, file read)``."""
    errors = []
    for candidate in (path, previous_path(path)):
        try:
            return load_checkpoint(candidate), candidate
        except CheckpointError as exc:
            errors.append(str(exc))
            if candidate == path and candidate.exists():
                log.warning("%s; falling back to %s", exc, previous_path(path).name)
    raise CheckpointError(f"no usable checkpoint to resume from: {'; '.join(errors)}")


# --------------------------------------------------------------------------- RNG states as plain values


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and plain values (``weights_only``-loadable)."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(_to_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


# --------------------------------------------------------------------------- models and run directories


def model_config_dict(model: nn.Module, fallback: Mapping[str, Any]) -> dict[str, Any]:
    """The full config of a built model (its ``config`` dataclass), else the overrides it was built with."""
    cfg = getattr(model, "config", None)
    if cfg is not None and is_dataclass(cfg) and not isinstance(cfg, type):
        return asdict(cfg)
    return dict(fallback)


def build_model(name: str, schema: Schema, overrides: Mapping[str, Any], preset: str) -> nn.Module:
    """Build a registered model; unknown names and bad overrides become UserErrors naming the valid choices."""
    from dhan import models  # imported here: the models package is heavy and `dhan.config` users do not need it

    if name not in models.MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(models.MODELS)}")
    try:
        return models.build_model(name, schema, overrides=dict(overrides), preset=preset)
    except UserError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(f"cannot build model {name!r}: {exc}") from None


def model_config_class(name: str) -> type | None:
    """The config dataclass of a registered model, for typing ``--set model.*`` values (None if unknown)."""
    from dhan import models

    entry = models.MODELS.get(name)
    if entry is None:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(models.MODELS)}")
    if isinstance(entry, tuple) and entry and isinstance(entry[0], type) and is_dataclass(entry[0]):
        return entry[0]
    cls = getattr(entry, "config_class", None)
    return cls if isinstance(cls, type) else None


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: no such file; is {path.parent} a run directory made by `dhan train`?")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def load_run_model(run_dir: str | Path, which: str = "best") -> tuple[nn.Module, dict[str, Any], Schema]:
    """Rebuild the model of a run from ``config.json`` + ``schema.json`` and load ``best.pt`` (or ``last.pt``)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory; create it with `dhan train --out {run}`")
    resolved = read_json(run / "config.json")
    schema = Schema.load(run / "schema.json")
    ckpt = load_checkpoint(run / f"{which}.pt")
    model = build_model(str(resolved["model_name"]), schema, resolved.get("model") or {}, str(resolved["preset"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, resolved, schema
