"""Where actstream keeps what it builds: compiled engines, exported graphs, OpenVINO's model
cache."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ACTSTREAM_CACHE_DIR"


def cache_base() -> Path:
    """`$ACTSTREAM_CACHE_DIR`, else `$XDG_CACHE_HOME/actstream` (`~/.cache/actstream`)."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "actstream"
    )
    return Path(base)
