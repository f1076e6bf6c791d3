"""Live sample streams over Lab Streaming Layer (`lsl://NAME`), the standard transport of
biosignal and sensor streams, through `pylsl` (its wheel bundles liblsl).

The stream is found by name on the local network; its channel count and nominal rate must be
the model's. Samples keep the source clock's timestamps (no clock synchronisation is
applied): a frame's stream time is its last sample's timestamp minus the connection's first,
and the frame carries the source clock itself (`Frame.source_clock_s`, in every event as
`source_clock_s`). A stream silent for `stream.timeout_s` is a disconnect (the reader
reconnects, resolving the name again); gaps in the sample clock are counted and logged.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stream.signals import PULL_TIMEOUT_S, LiveSampleFrames, check_stream
from stream.sources import SourceError

logger = logging.getLogger(__name__)


def import_pylsl() -> Any:
    """pylsl, with liblsl's own console log limited to fatal errors (actstream reports
    what matters itself); a missing install is a `SourceError` saying how to get it."""
    if "LSLAPICFG" not in os.environ:
        cfg = Path(tempfile.gettempdir()) / "actstream-lsl.cfg"
        if not cfg.exists():
            cfg.write_text("[log]\nlevel = -3\n")
        os.environ["LSLAPICFG"] = str(cfg)
    try:
        import pylsl
    except (ImportError, OSError, RuntimeError) as exc:
        raise SourceError(f"lsl:// needs pylsl ({exc}): pip install 'actstream[signals]'") from None
    return pylsl


class LslFrames(LiveSampleFrames):
    """An LSL inlet as a live source of signal frames (source clock: LSL's timestamps)."""

    def connect(self) -> None:
        pylsl = import_pylsl()
        name = self.spec.params["name"]
        found = pylsl.resolve_byprop("name", name, timeout=self.timeout_s)
        if not found:
            raise OSError(f"no LSL stream named {name!r} found within {self.timeout_s:g} s")
        info = found[0]
        check_stream(self.spec, self.framing, info.channel_count(), info.nominal_srate())
        self.inlet = pylsl.StreamInlet(info, max_buflen=max(1, int(self.timeout_s * 2)))
        self.inlet.open_stream(timeout=self.timeout_s)

    def pull(self) -> tuple[np.ndarray, np.ndarray, bool] | None:
        samples, stamps = self.inlet.pull_chunk(timeout=PULL_TIMEOUT_S, max_samples=4096)
        if not stamps:
            return None
        return np.asarray(samples, np.float32), np.asarray(stamps, np.float64), True

    def close(self) -> None:
        inlet, self.inlet = getattr(self, "inlet", None), None
        if inlet is not None:
            inlet.close_stream()
