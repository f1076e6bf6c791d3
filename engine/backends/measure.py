"""`auto` by measurement: every backend × precision this CPU can run is compiled, checked
against eager fp32 PyTorch and timed on this host; the fastest whose difference is within its
precision's bound becomes the engine directory, and the manifest records every candidate and
why the chosen one won (`notes.auto`)."""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.backends.base import Backend, BackendError
from engine.backends.choice import BACKEND_PRECISIONS, backend_problem, check_precision
from engine.backends.manifest import Manifest, read_manifest, write_manifest
from engine.backends.verify import ACCURACY_BOUNDS, AccuracyError
from engine.cpu import usable_features
from models.action_model import ActionModel, ModelConfig

logger = logging.getLogger(__name__)

CPU_BACKENDS = ("onnxruntime", "openvino", "torch")

# A lower precision is chosen only when it is at least this much faster than the best at a
# higher one: timing on a shared machine varies by about this much, and the higher
# precision is the closer to the trained model.
PREFER_WITHIN = 0.10
RANK = {"fp32": 0, "fp16": 1, "bf16": 1, "int8": 2}  # higher: further from fp32


def choose(timed: list[dict]) -> dict:
    """The candidate of the highest precision whose time per frame is within
    `PREFER_WITHIN` of the fastest (the fastest itself when none is)."""
    fastest = min(r["ms_per_frame"] for r in timed)
    ranked = sorted(timed, key=lambda r: (RANK[r["precision"]], r["ms_per_frame"]))
    return next(r for r in ranked if r["ms_per_frame"] <= fastest * (1 + PREFER_WITHIN))


def _median_seconds(fn: Callable[[], object], min_seconds: float, min_runs: int = 3) -> float:
    fn()  # warm-up: first-call allocations and kernel choices
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def model_cost(
    backend: Backend, config: ModelConfig, *, batch: int = 8, min_seconds: float = 1.0
) -> dict[str, float]:
    """Milliseconds of model time per frame of one stream, with `batch` streams in step: the
    backbone on `batch` frames and the temporal step over `batch` streams, each divided by
    `batch`, plus one head window every `head.stride_frames` frames."""
    rng = np.random.default_rng(0)
    if config.input is not None:
        images = rng.normal(0, 1, (batch, *config.frame_shape)).astype(np.float32)
    else:
        s = config.backbone.image_size
        images = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    x = torch.randn(batch, config.feature_dim)
    cache = backend.init_cache(batch)
    T = config.head.window_frames
    window = torch.randn(1, T, config.temporal.dim)
    valid = torch.ones(1, T, dtype=torch.bool)
    backbone = _median_seconds(lambda: backend.encode_frames(images, images), min_seconds)
    temporal = _median_seconds(lambda: backend.temporal_step(x, cache), min_seconds)
    head = _median_seconds(lambda: backend.head(window, valid), min_seconds)
    per_frame = backbone / batch + temporal / batch + head / config.head.stride_frames
    return {
        "ms_per_frame": round(1e3 * per_frame, 4),
        "backbone_frames_per_s": round(batch / backbone, 1),
        "temporal_ms": round(1e3 * temporal, 3),
        "head_ms": round(1e3 * head, 3),
        "batch": batch,
    }


def compile_auto(
    model: ActionModel,
    config: ModelConfig,
    out_dir: str | Path,
    *,
    max_batch: int,
    calibration: tuple[np.ndarray, np.ndarray] | None,
    step: int = 0,
    min_seconds: float = 1.0,
    candidates: tuple[tuple[str, str], ...] | None = None,
    say: Callable[[str], None] = logger.info,
) -> Manifest:
    """Compiles every CPU backend × precision that runs here (or `candidates`), keeps the
    fastest within its accuracy bound in `out_dir` and records the measurements."""
    from engine.backends.compile import compile_engine, load_engine

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if candidates is None:
        candidates = tuple((b, p) for b in CPU_BACKENDS for p in BACKEND_PRECISIONS[b])
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.auto.", dir=out.parent) as tmp:
        for backend, precision in candidates:
            row: dict = {"backend": backend, "precision": precision}
            results.append(row)
            problem = backend_problem(backend, "cpu")
            if problem is None:
                try:
                    check_precision(precision, "cpu", backend)
                except BackendError as exc:
                    problem = str(exc)
            if problem is None and precision == "int8" and calibration is None:
                problem = "no calibration frames (--calibration)"
            if problem is None and precision == "int8" and config.input is not None:
                problem = "int8 is for image backbones"
            if problem:
                row["skipped"] = problem
                say(f"  {backend} {precision}: " + _describe(row))
                continue
            where = Path(tmp) / f"{backend}-{precision}"
            try:
                compiled = compile_engine(
                    model,
                    config,
                    where,
                    backend=backend,
                    precision=precision,
                    max_batch=max_batch,
                    step=step,
                    calibration=calibration,
                    verify=True,
                )
            except AccuracyError as exc:
                row["refused"] = str(exc)
            else:
                row["max_relative_error"] = max(compiled.notes["max_relative_error"].values())
                backend_obj, _ = load_engine(where)
                row |= model_cost(
                    backend_obj, config, batch=min(8, max_batch), min_seconds=min_seconds
                )
                del backend_obj
            say(f"  {backend} {precision}: " + _describe(row))
        timed = [r for r in results if "ms_per_frame" in r]
        if not timed:
            raise BackendError(
                "no backend and precision could be measured here: "
                + "; ".join(
                    f"{r['backend']} {r['precision']}: {r.get('skipped') or r.get('refused')}"
                    for r in results
                )
            )
        best = choose(timed)
        fastest = min(timed, key=lambda r: r["ms_per_frame"])
        bound = ACCURACY_BOUNDS[best["precision"]]
        why = (
            f"{best['ms_per_frame']} ms of model time per frame on this host, within "
            f"{best['precision']}'s accuracy bound {bound:g}"
        )
        if fastest is not best:
            why += (
                f"; {fastest['backend']} {fastest['precision']} ({fastest['ms_per_frame']} ms) "
                f"is less than {PREFER_WITHIN:.0%} faster, so the higher precision is kept"
            )
        chosen = Path(tmp) / f"{best['backend']}-{best['precision']}"
        manifest = read_manifest(chosen)  # what compile wrote; no need to load it again
        manifest.notes["auto"] = {
            "chosen": f"{best['backend']} {best['precision']}",
            "why": why,
            "cpu_features": usable_features(),
            "candidates": results,
        }
        write_manifest(chosen, manifest)
        if out.exists():
            shutil.rmtree(out)
        chosen.rename(out)
    return manifest


def _describe(row: dict) -> str:
    if "skipped" in row:
        return f"skipped ({row['skipped']})"
    if "refused" in row:
        return f"refused ({row['refused']})"
    fps, err = row["backbone_frames_per_s"], row["max_relative_error"]
    return (
        f"{row['ms_per_frame']:.3f} ms per frame (backbone {fps:.0f} frames/s at batch "
        f"{row['batch']}), max relative difference {err:.1e}"
    )
