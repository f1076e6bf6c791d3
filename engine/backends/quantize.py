"""int8 on the CPU: the backbone graph quantised statically to QDQ form with ONNX Runtime's
quantiser, calibrated on real frames of the model's training videos (`engine.calibration`);
one quantised graph that ONNX Runtime and OpenVINO both run on their int8 kernels (VNNI /
AMX).

Only the backbone is quantised: it is where an image model's cost is (convolutions and
matrix products over every frame of every stream). The temporal step and the head stay
fp32: they are small per frame, and their attention softmax, layer norms and the head's
regression outputs are where int8 rounding would move the events.

Scheme: activations uint8 (asymmetric, min/max of the calibration frames), weights int8
per output channel (symmetric): the U8S8 form that VNNI's `vpdpbusd` computes directly.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from engine.backends.base import BackendError, frames_to_tensor
from models.action_model import ModelConfig

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 8  # calibration frames per quantiser run


# What is quantised. In a CNN, the matrix products and the operators between them
# (residual additions, activations, pooling), so that int8 tensors flow from one convolution
# to the next without a float round trip (measured with OpenVINO on a ResNet-18-class
# backbone: 2.8x ONNX Runtime fp32 with the products alone, 3.1-3.4x so). In a graph with
# attention (a Softmax: a ViT), the products only: quantising its residual additions too
# cost it speed (OpenVINO DINOv2-small 2.6x -> 2.0x) and pushed its difference to 0.09-0.10,
# at the int8 bound.
CNN_OPS = (
    "Conv", "MatMul", "Gemm", "Add", "Relu", "Clip", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Flatten", "Concat",
)  # fmt: skip
ATTENTION_OPS = ("Conv", "MatMul", "Gemm")


def quantized_ops(path: Path) -> list[str]:
    """The operator types to quantise in the graph at `path` (`CNN_OPS` or `ATTENTION_OPS`)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    attention = any(node.op_type == "Softmax" for node in graph.node)
    return list(ATTENTION_OPS if attention else CNN_OPS)


def quantize_backbone(
    path: Path, config: ModelConfig, images: np.ndarray, previous: np.ndarray
) -> dict:
    """Replaces the fp32 backbone graph at `path` with its int8 QDQ form, calibrated on the
    frames given; returns what was done (for the manifest's notes)."""
    if config.input is not None:
        raise BackendError(
            "precision int8 is for image backbones; a signal model's front end is a few "
            "small layers: use fp32"
        )
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cpu = torch.device("cpu")
    names = ["images", "previous"] if config.backbone.uses_previous else ["images"]

    def tensor(a: np.ndarray) -> np.ndarray:
        return frames_to_tensor(a, cpu, torch.float32).numpy()

    batches = [
        dict(
            zip(
                names,
                [
                    tensor(images[i : i + CALIBRATION_BATCH]),
                    tensor(previous[i : i + CALIBRATION_BATCH]),
                ],
                strict=False,
            )
        )  # fmt: skip
        for i in range(0, len(images), CALIBRATION_BATCH)
    ]

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.feed = iter(batches)

        def get_next(self) -> dict | None:
            return next(self.feed, None)

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(path), str(prepared))
        ops = quantized_ops(prepared)
        quantize_static(
            str(prepared),
            str(path),
            Frames(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=ops,
        )
    logger.info("quantised %s to int8 on %d calibration frames", path.name, len(images))
    return {
        "int8_graphs": ["backbone"],
        "int8_ops": ops,
        "calibration_frames": int(len(images)),
    }
