"""Optional dependencies, detected without importing anything heavy at package import time.

TensorRT needs care: the ``tensorrt-stubs`` package (installed for type checking) leaves a ``tensorrt``
*namespace* package behind, so ``import tensorrt`` succeeds without TensorRT. A real installation
has ``tensorrt.Builder`` / ``tensorrt.Runtime``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hhrnet.errors import BackendError


def install_hint(extra: str) -> str:
    """How to add an optional part: hhrnet installs from its repository (it is not on PyPI)."""
    return f"pip install '.[{extra}]' in an hhrnet checkout"


def tensorrt_or_none() -> ModuleType | None:
    """The real ``tensorrt`` module, or None when it is absent (or only type stubs are installed)."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception:  # any import failure means "not usable"
        return None
    return trt if hasattr(trt, "Runtime") else None


def require_tensorrt() -> ModuleType:
    trt = tensorrt_or_none()
    if trt is None:
        raise BackendError(
            f"TensorRT is not installed ({install_hint('tensorrt')} on a machine with an NVIDIA GPU and driver)"
        )
    return trt


def torch_available() -> bool:
    """Whether torch can be imported (the ``train`` extra), without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a blocked or broken entry in sys.modules
        return False


def require_torch(what: str) -> None:
    """BackendError naming ``what`` when torch is missing: deployment installs run without it."""
    if not torch_available():
        raise BackendError(
            f"{what} needs PyTorch, which this installation does not have: {install_hint('train')} "
            "(deployment runs ONNX Runtime or TensorRT artifacts without it)"
        )
