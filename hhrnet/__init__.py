"""hhrnet: HigherHRNet bottom-up multi-person pose estimation as a fast, faithful deployment toolchain.

Importing the package is cheap: heavy dependencies (torch, onnx, tensorrt) are imported by the
modules that need them, never here.
"""

__version__ = "0.1.0"
