"""Checkpoints: `{model, config, classes, step, versions}` written atomically and read with
`torch.load(weights_only=True)` (no code is unpickled)."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from engine.backbones import build_action_model
from engine.loader import ConfigError, config_to_dict, from_dict
from models.action_model import ActionModel, ModelConfig

REQUIRED_KEYS = ("model", "config", "classes", "step", "versions")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names it and says why."""


def versions() -> dict[str, str]:
    import av
    import numpy

    return {"torch": str(torch.__version__), "av": str(av.__version__), "numpy": numpy.__version__}


def atomic_save(payload: Any, path: str | Path) -> None:
    """`torch.save` to a temp file in the same folder, fsync, then rename over `path`: a
    process killed mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    config: Any,
    *,
    step: int,
    weights_dtype: torch.dtype | None = None,
    task: str = "detection",
    trained_on: dict | None = None,
) -> None:
    """Writes `{model, config, classes, step, versions}` (and `task` for a task other than
    detection) atomically. `config` is the model's config dataclass (with `classes`);
    `weights_dtype` (e.g. torch.float16) stores floating-point weights smaller; loading
    casts them back. `trained_on`: what it was trained on (`{"annotations", "subset",
    "videos": [ids]}`), so that evaluation can warn when it is given those videos."""
    state = model.state_dict()
    if weights_dtype is not None:
        state = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "model": state,
        "config": config_to_dict(config),
        "classes": list(config.classes),
        "step": int(step),
        "versions": versions(),
    }
    if task != "detection":
        payload["task"] = task
    if trained_on is not None:
        payload["trained_on"] = trained_on
    atomic_save(payload, path)


def read_payload(path: str | Path, device: str = "cpu") -> dict:
    """A checkpoint file's contents, checked for the required keys; raises `CheckpointError`
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file; give a .pt file from actstream train"
        )
    try:
        payload: Any = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any pickled reference to code (a "GLOBAL" opcode).
        if "global" in str(exc).lower():
            raise CheckpointError(
                f"{path}: refused: the checkpoint needs code to be unpickled, which actstream "
                "never does; save plain tensors and values only"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt or truncated: {exc})"
        ) from None
    except Exception as exc:  # garbage bytes fail deep inside the unpickler in many ways
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt: {type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED_KEYS):
        raise CheckpointError(
            f"{path}: not an actstream checkpoint (needs keys {list(REQUIRED_KEYS)})"
        )
    return payload


def load_checkpoint(
    path: str | Path, device: str = "cpu", payload: dict | None = None
) -> tuple[ActionModel, ModelConfig, int]:
    """Reads a detection checkpoint (or uses its already read `payload`) and builds its
    model; raises `CheckpointError` naming the file."""
    payload = read_payload(path, device) if payload is None else payload
    if payload.get("task", "detection") != "detection":
        raise CheckpointError(
            f"{path}: a {payload['task']} checkpoint (clip recognition); the detector needs a "
            "detection checkpoint from actstream train"
        )
    return build_from_payload(path, payload, ModelConfig, build_action_model, device)


def build_from_payload(
    path: str | Path, payload: dict, config_type: type, build: Callable, device: str = "cpu"
) -> tuple[Any, Any, int]:
    """(model, config, step) from a checkpoint's contents: `config_type` parsed strictly from
    its config, `build(config)` loaded with its weights; `CheckpointError` naming `path`."""
    try:
        config = from_dict(config_type, payload["config"], "config")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: bad model config in checkpoint: {exc}") from None
    if list(config.classes) != list(payload["classes"]):
        raise CheckpointError(f"{path}: class list disagrees with the model config")
    model = build(config)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the model shape ({first})") from None
    return model.to(device).eval(), config, int(payload["step"])
