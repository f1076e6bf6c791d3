"""The engine directory's `manifest.json`: what was compiled, from which weights, for which
shapes, with which libraries — and the checks that refuse a directory that does not match.

An engine directory holds `manifest.json` plus the backend's artifacts:
torch: `model.pt` (a checkpoint); onnxruntime and openvino: `backbone.onnx`,
`temporal_step.onnx`, `head.onnx` (at int8 the backbone graph is the quantised one);
tensorrt: `backbone.ep`, `temporal_step.ep`, `head.ep` (torch-tensorrt ExportedPrograms)
and optionally `backbone.engine` (a serialized TensorRT engine).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.backends.graphs import graph_io
from engine.backends.names import BACKENDS, PRECISIONS
from engine.loader import ConfigError, config_to_dict, from_dict
from models.action_model import ModelConfig

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class EngineError(ValueError):
    """An engine directory that cannot be used; the message names it and says why."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (in name order): the
    identity of a set of weights, independent of how the file that held them was written."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Manifest:
    backend: str
    precision: str
    max_batch: int
    model: ModelConfig
    weights_sha256: str
    files: dict[str, str]
    versions: dict[str, str]
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes

    def io(self) -> dict:
        return {
            name: {kind: [s.to_json() for s in specs] for kind, specs in graph.items()}
            for name, graph in graph_io(self.model, self.precision).items()
        }

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "backend": self.backend,
            "precision": self.precision,
            "max_batch": self.max_batch,
            "classes": list(self.model.classes),
            "model_config": config_to_dict(self.model),
            "io": self.io(),
            "weights_sha256": self.weights_sha256,
            "files": self.files,
            "versions": self.versions,
            "created": self.created,
            "notes": self.notes,
        }


def write_manifest(engine_dir: str | Path, manifest: Manifest) -> Path:
    path = Path(engine_dir) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_manifest(engine_dir: str | Path, *, verify_files: bool = True) -> Manifest:
    """Reads and checks an engine directory's manifest; raises `EngineError` naming the
    directory and the first problem (missing or corrupt manifest, unknown backend or
    precision, shapes that disagree with the model config, missing or altered artifacts)."""
    d = Path(engine_dir)
    fix = f"; recompile it with actstream compile CHECKPOINT --out {d}"
    path = d / MANIFEST
    if not d.is_dir():
        raise EngineError(f"{d}: no such engine directory; create one with actstream compile")
    if not path.is_file():
        raise EngineError(f"{d}: not an engine directory (no {MANIFEST}){fix}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineError(f"{path}: corrupt manifest ({exc}){fix}") from None
    if not isinstance(raw, dict):
        raise EngineError(f"{path}: corrupt manifest (not a JSON object){fix}")
    required = ("format_version", "backend", "precision", "max_batch", "classes")
    required += ("model_config", "io", "weights_sha256", "files", "versions")
    missing = [k for k in required if k not in raw]
    if missing:
        raise EngineError(f"{path}: manifest lacks {', '.join(missing)}{fix}")
    if raw["format_version"] != FORMAT_VERSION:
        raise EngineError(
            f"{path}: manifest format {raw['format_version']!r}, this actstream reads "
            f"{FORMAT_VERSION}{fix}"
        )
    if raw["backend"] not in BACKENDS:
        raise EngineError(
            f"{path}: unknown backend {raw['backend']!r} (known: {', '.join(BACKENDS)}){fix}"
        )
    if raw["precision"] not in PRECISIONS:
        raise EngineError(
            f"{path}: unknown precision {raw['precision']!r} (known: {', '.join(PRECISIONS)}){fix}"
        )
    if not isinstance(raw["max_batch"], int) or raw["max_batch"] < 1:
        raise EngineError(f"{path}: max_batch must be a positive integer{fix}")
    try:
        model = from_dict(ModelConfig, raw["model_config"], "model_config")
    except ConfigError as exc:
        raise EngineError(f"{path}: bad model config ({exc}){fix}") from None
    if list(model.classes) != raw["classes"]:
        raise EngineError(f"{path}: classes disagree with the model config{fix}")
    if not isinstance(raw["files"], dict) or not raw["files"]:
        raise EngineError(f"{path}: manifest lists no artifacts{fix}")
    manifest = Manifest(
        backend=raw["backend"],
        precision=raw["precision"],
        max_batch=raw["max_batch"],
        model=model,
        weights_sha256=str(raw["weights_sha256"]),
        files={str(k): str(v) for k, v in raw["files"].items()},
        versions={str(k): str(v) for k, v in raw["versions"].items()},
        created=str(raw.get("created", "")),
        notes=raw.get("notes") or {},
    )
    expected = manifest.io()
    if raw["io"] != expected:
        graph = next((g for g in expected if raw["io"].get(g) != expected[g]), "?")
        raise EngineError(
            f"{path}: input/output shapes of graph {graph!r} disagree with the model config "
            f"(expected {json.dumps(expected.get(graph))}){fix}"
        )
    if verify_files:
        for name, digest in manifest.files.items():
            artifact = d / name
            if Path(name).name != name:
                raise EngineError(f"{path}: artifact name {name!r} must be a plain file name{fix}")
            if not artifact.is_file():
                raise EngineError(f"{d}: artifact {name} is missing{fix}")
            if file_sha256(artifact) != digest:
                raise EngineError(
                    f"{artifact}: checksum mismatch (the file changed after compile){fix}"
                )
    return manifest
