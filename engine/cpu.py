"""The CPU's vector and matrix units, from /proc/cpuinfo's flags (Linux): which of the fast
paths for fp32 (AVX2, AVX-512), int8 (VNNI, AMX-INT8) and bf16 (AVX512-BF16, AMX-BF16) this
host has. Every benchmark records them; a precision that needs a unit this CPU lacks is
refused by name."""

from __future__ import annotations

import os
from pathlib import Path

FEATURES = {  # actstream's name → the kernel's flag
    "avx2": "avx2",
    "avx512": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",
    "amx_tile": "amx_tile",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}


def cpu_features(cpuinfo: str | None = None) -> dict[str, bool]:
    """{feature: present} for `FEATURES` (all False where the flags cannot be read).
    `cpuinfo`: the text of /proc/cpuinfo (default: read it)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {name: flag in flags for name, flag in FEATURES.items()}


FEATURES_OFF_ENV = "ACTSTREAM_CPU_FEATURES_OFF"

# What each reduced CPU precision needs: any one of these units (actstream's names).
PRECISION_UNITS = {
    "bf16": ("avx512_bf16", "amx_bf16"),
    "int8": ("avx512_vnni", "avx_vnni", "amx_int8"),
}


def usable_features(cpuinfo: str | None = None) -> dict[str, bool]:
    """`cpu_features` less the units named in `$ACTSTREAM_CPU_FEATURES_OFF` (comma-separated,
    e.g. `avx512_bf16,amx_bf16`): a host can be told to leave a unit alone, and the refusals
    below are tested on any CPU."""
    features = cpu_features(cpuinfo)
    off = {n.strip() for n in os.environ.get(FEATURES_OFF_ENV, "").split(",") if n.strip()}
    unknown = off - set(FEATURES)
    if unknown:
        raise ValueError(
            f"{FEATURES_OFF_ENV} names {', '.join(sorted(unknown))}; known units: "
            f"{', '.join(FEATURES)}"
        )
    return {name: present and name not in off for name, present in features.items()}


def precision_problem(precision: str, cpuinfo: str | None = None) -> str | None:
    """Why `precision` cannot run fast on this CPU (naming the missing unit), or None."""
    units = PRECISION_UNITS.get(precision)
    if units is None:
        return None
    if any(usable_features(cpuinfo)[u] for u in units):
        return None
    return (
        f"precision {precision} needs a CPU with {' or '.join(units)} (this CPU has none of "
        "them, or they are turned off); use fp32"
    )
