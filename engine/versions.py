"""Installed package versions, read from their metadata without importing them (torch-free:
the event store records the version that wrote it, the checkpoints and the TensorRT check
compare them)."""

from __future__ import annotations

import importlib.metadata


def installed_version(package: str) -> str | None:
    """The installed distribution's version (without importing it), or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
