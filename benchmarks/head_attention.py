"""The ActionFormer head over long sequences, as offline evaluation runs it: time per step
and peak memory from 1 k to 36 k steps (one process per length, peak resident memory), and
the two attention forms (the masked (T, T) matrix and the band) side by side per length.

    python -m benchmarks.head_attention [--steps 1024 4096 16384 36864] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from benchmarks.common import save
from models.actionformer import ActionFormerHead, HeadConfig, banded_attention, masked_attention


def run_head(steps: int, repeats: int) -> dict[str, float]:
    """The bundled model's head shape with random weights (cost does not depend on them)."""
    torch.manual_seed(0)
    head = ActionFormerHead(HeadConfig(), in_dim=128, num_classes=6).eval()
    x = torch.randn(1, steps, 128)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t = time.perf_counter()
            head(x)
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "steps": steps,
        "seconds": min(times),
        "us_per_step": min(times) / steps * 1e6,
        "peak_rss_mb": peak / 1024,
        "head_rss_mb": (peak - base) / 1024,
    }


def attention_forms(steps: int, repeats: int) -> dict[str, float]:
    """One attention layer (4 heads of 32) both ways; the masked one only where it fits."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 32, steps) for _ in range(3))
    valid = torch.ones(1, steps, dtype=torch.bool)
    out = {"steps": steps}
    forms = [("banded", banded_attention)] + (
        [("masked", masked_attention)] if steps <= 4096 else []
    )
    for name, fn in forms:
        fn(q, k, v, valid, 4)
        t = time.perf_counter()
        for _ in range(repeats):
            fn(q, k, v, valid, 4)
        out[f"{name}_ms"] = (time.perf_counter() - t) / repeats * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=[1024, 4096, 16384, 36864])
    p.add_argument("--forms", type=int, nargs="+", default=[64, 128, 256, 512, 2048])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help="results folder (default results/)")
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(run_head(a.child, a.repeats)))
        return 0
    rows = []
    for steps in a.steps:
        cmd = [sys.executable, "-m", "benchmarks.head_attention", "--child", str(steps)]
        done = subprocess.run(cmd + ["--repeats", str(a.repeats)], capture_output=True, text=True)
        if done.returncode:
            print(f"head at {steps} steps failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout))
        r = rows[-1]
        print(
            f"head {steps:6d} steps: {r['seconds']:.3f} s, {r['us_per_step']:.1f} us/step, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    forms = []
    for steps in a.forms:
        forms.append(attention_forms(steps, max(a.repeats, 10)))
        f = forms[-1]
        masked = f"{f['masked_ms']:.3f} ms" if "masked_ms" in f else "-"
        print(f"attention {steps:5d} steps: banded {f['banded_ms']:.3f} ms, masked {masked}")
    flat = rows[-1]["us_per_step"] / rows[0]["us_per_step"]
    print(f"time per step, {rows[-1]['steps']} vs {rows[0]['steps']} steps: {flat:.2f}x")
    path = save("head_attention", {"head": rows, "attention": forms, "per_step_ratio": flat}, a.out)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
