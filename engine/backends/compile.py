"""Compile a checkpoint into an engine directory (manifest plus the backend's artifacts),
and load one back as a backend.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engine.backends.base import Backend, BackendError
from engine.backends.cache_dir import cache_base
from engine.backends.choice import backend_problem, check_precision, library_versions
from engine.backends.graphs import GRAPHS, ONNX_OPSET, export_onnx
from engine.backends.manifest import (
    BACKENDS,
    MANIFEST,
    EngineError,
    Manifest,
    file_sha256,
    read_manifest,
    weights_sha256,
    write_manifest,
)
from engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from engine.backends.openvino_backend import OpenVinoBackend
from engine.backends.quantize import quantize_backbone
from engine.backends.tensorrt_backend import TensorRTBackend, build_tensorrt
from engine.backends.torch_backend import TorchBackend
from engine.backends.verify import check_accuracy, differences
from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.loader import config_to_dict
from engine.versions import installed_version
from models.action_model import ActionModel, ModelConfig

logger = logging.getLogger(__name__)

EXPORTS_KEPT = 8  # exported graph sets the export cache keeps (the least recently used go)


def compile_engine(
    model: ActionModel,
    config: ModelConfig,
    out_dir: str | Path,
    *,
    backend: str,
    precision: str,
    max_batch: int,
    device: str = "cpu",
    standalone_engine: bool = False,
    step: int = 0,
    calibration: tuple[np.ndarray, np.ndarray] | None = None,
    verify: bool = False,
) -> Manifest:
    """Writes an engine directory for `backend`: artifacts first, then `manifest.json`, all in
    a temporary sibling directory renamed into place, so a failed compile leaves nothing
    half-written behind. `calibration`: frames and their previous frames (uint8, the
    model's size), needed at int8 (`engine.backends.quantize`). `verify`: load the result,
    compare it with eager fp32 PyTorch on random inputs (`verify.compare_backends`), record
    the differences in the manifest's notes and refuse one beyond the precision's bound
    (`verify.AccuracyError`) before anything replaces `out_dir`."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    problem = backend_problem(backend, device)
    if problem:
        raise BackendError(f"backend {backend} is unavailable: {problem}")
    check_precision(precision, device, backend)
    if standalone_engine and backend != "tensorrt":
        raise BackendError("--standalone-engine applies to the tensorrt backend only")
    if precision == "int8" and calibration is None:
        raise BackendError(
            "precision int8 needs calibration frames: actstream compile CHECKPOINT --precision "
            "int8 [--calibration VIDEOS] --out DIR, then run --engine DIR"
        )
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not (out / MANIFEST).is_file():
        raise BackendError(f"{out}: exists and is not an engine directory; choose another --out")
    digest = weights_sha256(model.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        started = time.perf_counter()
        model = model.eval()
        notes: dict = {}
        if backend == "torch":
            dtype = torch.float16 if precision == "fp16" else None
            save_checkpoint(tmp / "model.pt", model, config, step=step, weights_dtype=dtype)
            files = ["model.pt"]
        elif backend in ("onnxruntime", "openvino"):
            dtype = torch.float16 if precision == "fp16" else torch.float32
            files = onnx_graphs(
                copy.deepcopy(model).to(device, dtype),
                config,
                tmp,
                precision="fp16" if precision == "fp16" else "fp32",
                max_batch=max_batch,
            )
            if precision == "int8":
                images, previous = calibration  # every other frame: the rest check it
                notes |= quantize_backbone(
                    tmp / "backbone.onnx", config, images[::2], previous[::2]
                )
        else:
            files = build_tensorrt(
                copy.deepcopy(model),
                config,
                tmp,
                precision=precision,
                max_batch=max_batch,
                device=device,
                standalone_engine=standalone_engine,
            )
        manifest = Manifest(
            backend=backend,
            precision=precision,
            max_batch=max_batch,
            model=config,
            weights_sha256=digest,
            files={name: file_sha256(tmp / name) for name in files},
            versions=library_versions(backend),
            notes={
                "device": _device_name(device),
                "compile_seconds": round(time.perf_counter() - started, 2),
                **notes,
            },
        )
        write_manifest(tmp, manifest)
        if verify:
            reference = TorchBackend(copy.deepcopy(model), device)
            compiled, _ = load_engine(tmp, device=device)
            batch = min(4, max_batch)
            held_out = None  # frames the quantiser did not see: int8 is judged on real ones
            if calibration is not None and precision == "int8":
                held_out = (calibration[0][1::2][:8], calibration[1][1::2][:8])
            diffs, relative = differences(reference, compiled, config, batch=batch, frames=held_out)
            del compiled
            manifest.notes["max_abs_difference"] = {k: float(f"{v:.3g}") for k, v in diffs.items()}
            manifest.notes["max_relative_error"] = {
                k: float(f"{v:.3g}") for k, v in relative.items()
            }
            check_accuracy(precision, relative)
            write_manifest(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def onnx_graphs(
    model: ActionModel, config: ModelConfig, out: Path, *, precision: str, max_batch: int
) -> list[str]:
    """Writes `<graph>.onnx` for every graph into `out`; returns the file names. An export
    takes 10-30 s on a CPU, so its result is kept in `<cache>/onnx/` under a key of
    everything that shapes it (weights, model config, precision, batch bound, device, the
    model and graph code, library versions): compiling the same weights again (another
    `--out`, a rebuilt cache entry) copies the files, checked against their hashes."""
    names = [f"{name}.onnx" for name in GRAPHS]
    memo = cache_base() / "onnx" / _export_key(model, config, precision, max_batch)
    if _remembered(memo, names):
        try:
            for name in names:
                shutil.copyfile(memo / name, out / name)
            os.utime(memo)  # recently used
            logger.info("using the exported graphs cached in %s", memo)
            return names
        except OSError:  # another process replaced or dropped the set meanwhile: export
            pass
    export_onnx(model, out, config, precision=precision, max_batch=max_batch)
    _remember(out, names, memo)
    return names


def _export_key(model: ActionModel, config: ModelConfig, precision: str, max_batch: int) -> str:
    what = {
        "weights": weights_sha256(model.state_dict()),
        "model": config_to_dict(config),
        "precision": precision,
        "max_batch": max_batch,
        "device": next(model.parameters()).device.type,
        "opset": ONNX_OPSET,
        "code": _code_sha256(),
        "versions": [
            installed_version(n) for n in ("torch", "onnx", "onnxscript", "transformers", "timm")
        ],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


@functools.cache
def _code_sha256() -> str:
    """The source the graphs are traced from: the models package and the graph wrappers."""
    import models

    h = hashlib.sha256()
    for path in sorted(Path(models.__file__).parent.glob("*.py")) + [
        Path(__file__).with_name("graphs.py")
    ]:
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def _remembered(memo: Path, names: list[str]) -> bool:
    try:
        want = json.loads((memo / "files.json").read_text())
        return sorted(want) == sorted(names) and all(
            file_sha256(memo / name) == want[name] for name in names
        )
    except (OSError, ValueError, TypeError):
        return False


def _remember(out: Path, names: list[str], memo: Path) -> None:
    """Copies the exported files into the export cache (complete or not at all) and drops
    the least recently used sets beyond `EXPORTS_KEPT`. Best effort: a cache that cannot be
    written costs the next compile its export, nothing else."""
    tmp = None
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".", dir=memo.parent))
        for name in names:
            shutil.copyfile(out / name, tmp / name)
        (tmp / "files.json").write_text(
            json.dumps({name: file_sha256(tmp / name) for name in names})
        )
        if memo.exists():
            shutil.rmtree(memo)
        tmp.rename(memo)
        tmp = None
        kept = sorted(
            (p for p in memo.parent.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in kept[EXPORTS_KEPT:]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        logger.warning("could not keep the exported graphs in %s: %s", memo.parent, exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _device_name(device: str) -> str:
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(d)
    return "cpu"


def load_engine(
    engine_dir: str | Path,
    *,
    device: str = "cpu",
    torch_compile: bool = False,
    cuda_graphs: bool | None = None,
    threads: int = 0,
) -> tuple[Backend, Manifest]:
    """Checks an engine directory (`read_manifest`) and builds its backend on `device`."""
    manifest = read_manifest(engine_dir)
    d = Path(engine_dir)
    problem = backend_problem(manifest.backend, device)
    if problem:
        raise BackendError(f"{d}: compiled for {manifest.backend}, which is unavailable: {problem}")
    _check_versions(d, manifest)
    if manifest.backend == "torch":
        try:
            model, config, _ = load_checkpoint(d / "model.pt", "cpu")
        except CheckpointError as exc:
            raise EngineError(str(exc)) from None
        if config != manifest.model:
            raise EngineError(f"{d}: model.pt's config disagrees with the manifest; recompile")
        backend: Backend = TorchBackend(
            model,
            device,
            precision=manifest.precision,
            compile=torch_compile,
            cuda_graphs=cuda_graphs,
            max_batch=manifest.max_batch,
        )
    elif manifest.backend == "onnxruntime":
        backend = OnnxRuntimeBackend(
            d, manifest.model, precision=manifest.precision, device=device, threads=threads
        )
    elif manifest.backend == "openvino":
        backend = OpenVinoBackend(
            d, manifest.model, precision=manifest.precision, device=device, threads=threads
        )
    else:
        backend = TensorRTBackend(
            d,
            manifest.model,
            precision=manifest.precision,
            device=device,
            max_batch=manifest.max_batch,
        )
    return backend, manifest


def _check_versions(engine_dir: Path, manifest: Manifest) -> None:
    """TensorRT engines only run with the TensorRT they were built with; other backends
    warn when a library's version changed since compile."""
    now = library_versions(manifest.backend)
    for lib in ("tensorrt", "torch_tensorrt", "onnxruntime", "openvino", "torch"):
        then = manifest.versions.get(lib)
        if then is None or now.get(lib) == then:
            continue
        if manifest.backend == "tensorrt" and lib in ("tensorrt", "torch_tensorrt"):
            raise EngineError(
                f"{engine_dir}: built with {lib} {then}, this host has {now.get(lib)}; "
                "recompile it here with actstream compile"
            )
        logger.warning(
            "%s: compiled with %s %s, running with %s", engine_dir, lib, then, now.get(lib)
        )
