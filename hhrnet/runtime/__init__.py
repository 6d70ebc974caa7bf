"""Torch-free runtimes: what a deployment machine needs to run an exported artifact.

* :mod:`.artifact`    the contract an exported file carries (codec, config, graph, precision) and how it is
                      read back from ONNX metadata or an engine sidecar;
* :mod:`.onnxruntime` ONNX Runtime sessions (CPU by default, CUDA/TensorRT providers where installed);
* :mod:`.tensorrt`    TensorRT engines (cuda-python memory, guard before deserialising).

Nothing here imports torch, onnx or :mod:`hhrnet.export`; a test imports every module in a fresh
interpreter with torch blocked.
"""
