"""ONNX export, TensorRT engine building and runtimes behind one backend interface."""
