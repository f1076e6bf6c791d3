"""Backends side by side: torch vs onnxruntime (vs TensorRT where it runs) for the backbone
(per batch size), the temporal step and the head, on the same model and inputs.

    python -m benchmarks.backends [--batches 1 2 4 8 16 32] [--repeats 50] [--device cpu]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, figure, save, stats_ms, time_calls
from engine.backends.base import Backend
from engine.backends.choice import EngineConfig, backend_problem, default_precision
from engine.backends.compile import compile_engine, load_engine
from engine.checkpoint import load_checkpoint
from models.action_model import ModelConfig, build_model

DEMO = Path(__file__).resolve().parents[1] / "configs" / "weights" / "demo.pt"


def measure(
    backend: Backend, config: ModelConfig, batches: list[int], repeats: int
) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    s = config.backbone.image_size
    out: dict[str, dict] = {}
    for b in batches:
        images = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
        prev = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
        out[f"backbone_b{b}"] = stats_ms(
            time_calls(lambda i=images, p=prev: backend.encode_frames(i, p), repeats=repeats)
        )
    cache = backend.init_cache(1)
    x = torch.randn(1, config.backbone.feature_dim)

    def step():
        nonlocal cache
        _, cache = backend.temporal_step(x, cache)

    out["temporal_step_b1"] = stats_ms(time_calls(step, repeats=repeats * 4))
    T = config.head.window_frames
    window, valid = torch.randn(1, T, config.temporal.dim), torch.ones(1, T, dtype=torch.bool)
    out["head_b1"] = stats_ms(time_calls(lambda: backend.head(window, valid), repeats=repeats))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", default=str(DEMO), help="checkpoint (default: bundled)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default results/)")
    parser.add_argument("--name", default="backends", help="result file name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if Path(args.weights).is_file():
        model, config, _ = load_checkpoint(args.weights)
    else:
        config = ModelConfig()
        model = build_model(config).eval()
    results, skipped = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("torch", "onnxruntime", "tensorrt"):
            problem = backend_problem(name, args.device)
            if problem:
                skipped[name] = problem
                print(f"{name}: skipped ({problem})", file=sys.stderr)
                continue
            precision = default_precision(name)
            engine_dir = Path(tmp) / name
            compile_engine(
                model,
                config,
                engine_dir,
                backend=name,
                precision=precision,
                # the engine `actstream run` builds, unless larger batches are asked for
                max_batch=max(EngineConfig().max_batch, *args.batches),
                device=args.device,
            )
            backend, _ = load_engine(engine_dir, device=args.device)
            results[name] = {
                "precision": precision,
                "timings_ms": measure(backend, config, args.batches, args.repeats),
            }
    rows = list(next(iter(results.values()))["timings_ms"])
    print(f"{'graph':<20}" + "".join(f"{n + ' p50 ms':>20}" for n in results))
    for row in rows:
        print(
            f"{row:<20}"
            + "".join(f"{results[n]['timings_ms'][row]['p50']:>20.3f}" for n in results)
        )
    path = save(
        args.name,
        {
            "device": args.device,
            "batches": args.batches,
            "repeats": args.repeats,
            "results": results,
            "skipped": skipped,
        },
        args.out,
    )
    with figure(path.with_suffix(".png")) as (_, ax):
        for n, r in results.items():
            ms = [r["timings_ms"][f"backbone_b{b}"]["p50"] / b for b in args.batches]
            ax.plot(args.batches, ms, marker="o", label=f"{n} {r['precision']}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("backbone batch size (frames)")
        ax.set_ylabel("p50 ms per frame")
        ax.set_title(f"Backbone cost per frame on {args.device}")
        ax.legend()
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
