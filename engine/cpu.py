"""The CPU's vector and matrix units, from /proc/cpuinfo's flags (Linux): which of the fast
paths for fp32 (AVX2, AVX-512), int8 (VNNI, AMX-INT8) and bf16 (AVX512-BF16, AMX-BF16) this
host has. Every benchmark records them; a precision that needs a unit this CPU lacks is
refused by name."""

from __future__ import annotations

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
