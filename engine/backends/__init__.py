"""Model backends: the exported-graph contract, the torch / ONNX Runtime / TensorRT backends
behind one interface, backend choice, compile, the engine cache and the manifest."""
