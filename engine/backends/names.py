"""The backends and precisions by name (no imports: the command line's choices)."""

BACKENDS = ("tensorrt", "onnxruntime", "openvino", "torch")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
