"""Backbone throughput on this CPU per backbone x backend x precision, with the fraction of
the CPU's peak it reaches and its difference to eager fp32.

Backbones: the bundled model's CNN, and realistic-cost image models built through the
Hugging Face path from local folders with random weights (cost does not depend on their
values): a ResNet-18-class and a ResNet-50-class CNN and a DINOv2-small ViT (patch 14), at
224 x 224. Each candidate is compiled into an engine directory as `actstream compile` does
(int8 calibrated on rendered synthetic scenes), checked against eager fp32, and its backbone
timed at one batch with every core.

Peak (FLOP/s) = cores used x clock x FLOP per cycle per core for the ISA the precision uses,
assuming two 512-bit FMA ports: fp32 AVX-512 64 (AVX2 32); bf16 AVX512-BF16 128, AMX-BF16
1024; int8 VNNI 256 (AVX-VNNI 128), AMX-INT8 2048 (integer ops counted as FLOPs). The clock is
/proc/cpuinfo's `cpu MHz`. Model FLOPs are torch's FLOP counter on the backbone at batch 1
(a multiply-add = 2).

    python -m benchmarks.cpu_precisions [--backbones builtin resnet18 resnet50 dinov2-small]
        [--batch 8] [--seconds 3] [--out results/]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, figure, save
from engine.backbones import build_action_model
from engine.backends.base import BackendError
from engine.backends.choice import BACKEND_PRECISIONS, backend_problem, check_precision
from engine.backends.compile import compile_engine, load_engine
from engine.backends.graphs import graph_module
from engine.backends.measure import CPU_BACKENDS
from engine.backends.onnxruntime_backend import available_cores
from engine.checkpoint import load_checkpoint
from engine.cpu import usable_features
from models.action_model import ModelConfig
from stream.synthetic import SyntheticScene

DEMO = Path(__file__).resolve().parents[1] / "configs" / "weights" / "demo.pt"
BACKBONES = ("builtin", "resnet18", "resnet50", "dinov2-small")


def save_random_backbone(kind: str, folder: Path) -> int:
    """Writes a randomly initialised Hugging Face model of `kind` to `folder`; returns its
    feature size."""
    from transformers import Dinov2Config, Dinov2Model, ResNetConfig, ResNetModel

    torch.manual_seed(0)
    if kind == "resnet18":
        config = ResNetConfig(
            depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic"
        )
        model, dim = ResNetModel(config), 512
    elif kind == "resnet50":
        config = ResNetConfig(
            depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck"
        )
        model, dim = ResNetModel(config), 2048
    elif kind == "dinov2-small":
        config = Dinov2Config(
            hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
            image_size=224, intermediate_size=1536,
        )  # fmt: skip
        model, dim = Dinov2Model(config), 384
    else:
        raise ValueError(f"unknown backbone {kind!r} (choose from {', '.join(BACKBONES)})")
    model.save_pretrained(folder)
    return dim


def model_for(kind: str, base: ModelConfig, tmp: Path):
    if kind == "builtin":
        return load_checkpoint(DEMO, "cpu")[:2]
    folder = tmp / kind
    dim = save_random_backbone(kind, folder)
    backbone = dataclasses.replace(
        base.backbone, name=f"hf:{folder}", image_size=224, feature_dim=dim, motion_input=False
    )
    config = dataclasses.replace(base, backbone=backbone)
    return build_action_model(config).eval(), config


def backbone_flops(model, config: ModelConfig) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    s = config.backbone.image_size
    x = torch.rand(1, 3, s, s)
    args = (x, x) if config.backbone.uses_previous else (x,)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        graph_module(model, "backbone")(*args)
    return float(counter.get_total_flops())


def peak_flops(precision: str, features: dict[str, bool], cores: int) -> tuple[float, str]:
    """FLOP/s of this CPU's cores for the precision's best unit here, and the unit's name."""
    per_cycle, unit = (64, "AVX-512") if features["avx512"] else (32, "AVX2")
    if precision == "bf16":
        if features["amx_bf16"]:
            per_cycle, unit = 1024, "AMX-BF16"
        elif features["avx512_bf16"]:
            per_cycle, unit = 128, "AVX512-BF16"
    if precision == "int8":
        if features["amx_int8"]:
            per_cycle, unit = 2048, "AMX-INT8"
        elif features["avx512_vnni"]:
            per_cycle, unit = 256, "AVX512-VNNI"
        elif features["avx_vnni"]:
            per_cycle, unit = 128, "AVX-VNNI"
    return cores * cpu_ghz() * 1e9 * per_cycle, unit


def cpu_ghz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1e3
    except (OSError, ValueError):
        pass
    return 2.0


def scene_frames(size: int, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Rendered synthetic frames (and each one's previous frame) at `size`: calibration."""
    scene = SyntheticScene(seed=7, width=size, height=size, num_actors=2, duration_s=n / 10 + 1)
    frames = np.stack([scene.render(i / 10) for i in range(n + 1)])
    return frames[1:], frames[:-1]


def backbone_fps(backend, images: np.ndarray, seconds: float) -> float:
    backend.encode_frames(images, images)
    times, started = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        backend.encode_frames(images, images)
        times.append(time.perf_counter() - t0)
    return len(images) / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cpu_precisions", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--batch", type=int, default=8, help="backbone batch (default 8)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per candidate")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="model threads (default 0: every core; the detector leaves one to the readers)",
    )  # fmt: skip
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default results/)")
    parser.add_argument("--name", default="cpu_precisions", help="result file name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    features = usable_features()
    cores = args.threads or available_cores()
    torch.set_num_threads(cores)
    base = load_checkpoint(DEMO, "cpu")[1]
    rows = []
    print(f"{cores} cores at {cpu_ghz():.2f} GHz; units: "
          + ", ".join(k for k, v in features.items() if v), file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.backbones:
            model, config = model_for(kind, base, Path(tmp))
            flops = backbone_flops(model, config)
            s = config.backbone.image_size
            calibration = scene_frames(s)
            images = np.resize(calibration[0], (args.batch, s, s, 3))
            reference_fps = None
            for backend_name in CPU_BACKENDS:
                for precision in BACKEND_PRECISIONS[backend_name]:
                    if precision == "fp16":  # a CUDA precision
                        continue
                    row = {"backbone": kind, "backend": backend_name, "precision": precision,
                           "gflop_per_frame": round(flops / 1e9, 3)}  # fmt: skip
                    try:
                        problem = backend_problem(backend_name, "cpu")
                        if problem:
                            raise BackendError(problem)
                        check_precision(precision, "cpu", backend_name)
                        where = Path(tmp) / f"{kind}-{backend_name}-{precision}"
                        manifest = compile_engine(
                            model, config, where, backend=backend_name, precision=precision,
                            max_batch=max(8, args.batch), calibration=calibration, verify=True,
                        )  # fmt: skip
                    except Exception as exc:  # refused or unavailable: recorded, not fatal
                        row["skipped"] = str(exc).splitlines()[0]
                        print(f"{kind:<13} {backend_name:<12} {precision:<5} skipped: "
                              f"{row['skipped']}", file=sys.stderr)  # fmt: skip
                        rows.append(row)
                        continue
                    backend, _ = load_engine(where, threads=cores)
                    fps = backbone_fps(backend, images, args.seconds)
                    del backend
                    peak, unit = peak_flops(precision, features, cores)
                    if backend_name == "onnxruntime" and precision == "fp32":
                        reference_fps = fps
                    row |= {
                        "frames_per_s": round(fps, 1),
                        "peak_unit": unit,
                        "fraction_of_peak": round(flops * fps / peak, 4),
                        "max_relative_error": max(manifest.notes["max_relative_error"].values()),
                    }
                    rows.append(row)
                    print(f"{kind:<13} {backend_name:<12} {precision:<5} {fps:8.1f} frames/s  "
                          f"{100 * row['fraction_of_peak']:5.1f} % of {unit} peak  "
                          f"diff {row['max_relative_error']:.1e}", file=sys.stderr)  # fmt: skip
            for row in rows:
                if row["backbone"] == kind and "frames_per_s" in row and reference_fps:
                    row["vs_onnxruntime_fp32"] = round(row["frames_per_s"] / reference_fps, 2)
    print(f"\n{'backbone':<13} {'backend':<12} {'prec':<5} {'frames/s':>9} {'x ORT fp32':>10}"
          f" {'% peak':>7}")  # fmt: skip
    for r in rows:
        if "frames_per_s" in r:
            print(f"{r['backbone']:<13} {r['backend']:<12} {r['precision']:<5} "
                  f"{r['frames_per_s']:>9.1f} {r.get('vs_onnxruntime_fp32', 0):>10.2f} "
                  f"{100 * r['fraction_of_peak']:>6.1f}%")  # fmt: skip
    path = save(args.name, {"batch": args.batch, "cores": cores, "ghz": cpu_ghz(),
                            "rows": rows}, args.out)  # fmt: skip
    timed = [r for r in rows if "vs_onnxruntime_fp32" in r]
    with figure(path.with_suffix(".png")) as (_, ax):
        kinds = list(dict.fromkeys(r["backbone"] for r in timed))
        labels = list(dict.fromkeys(f"{r['backend']} {r['precision']}" for r in timed))
        width = 0.8 / max(1, len(labels))
        for j, label in enumerate(labels):
            values = [
                next((r["vs_onnxruntime_fp32"] for r in timed if r["backbone"] == k
                      and f"{r['backend']} {r['precision']}" == label), 0.0)
                for k in kinds
            ]  # fmt: skip
            ax.bar([i + j * width for i in range(len(kinds))], values, width, label=label)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(kinds))], kinds)
        ax.set_ylabel("backbone frames/s ÷ ONNX Runtime fp32")
        ax.set_title(f"CPU precisions, batch {args.batch}, {cores} cores")
        ax.legend(fontsize=7)
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
