"""One inference interface over torch, ONNX Runtime and TensorRT.

A backend is a network callable ``(B, 3, H, W) f32 -> [out0, out1]`` (the raw network outputs, the contract
of :class:`hhrnet.inference.Predictor`) with ``name``, ``precision`` and ``device`` attributes.
``create_backend("auto", ...)`` picks TensorRT for an engine, ONNX Runtime for an ONNX file (the portable
default), torch for a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.errors import BackendError


class TorchBackend:
    name = "torch"

    def __init__(self, model: Any, *, device: str = "cpu", fp16: bool = False, channels_last: bool = False,
                 compile: bool = False) -> None:  # fmt: skip
        import torch

        from hhrnet.inference import torch_network

        self.device = device
        self.precision = "fp16" if fp16 and device.startswith("cuda") else "fp32"
        if compile:
            model = torch.compile(model)
        self._run = torch_network(model, device=device, fp16=fp16, channels_last=channels_last)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._run(batch)  # type: ignore[return-value]


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        from hhrnet.export.onnx import read_metadata

        p = Path(path)
        if not p.is_file():
            raise BackendError(f"ONNX model not found: {p}")
        meta = read_metadata(p)
        if meta.get("variant", "raw") != "raw":
            raise BackendError(f"{p} is the '{meta['variant']}' variant; the backend interface runs 'raw' exports")
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            for wanted in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
                if wanted in available:
                    providers.insert(0, wanted)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(p), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types for corrupt files
            raise BackendError(f"ONNX Runtime cannot load {p}: {str(exc).splitlines()[0]}") from None
        self.device = "cuda" if providers[0] != "CPUExecutionProvider" else "cpu"
        self.precision = "fp32"
        self.metadata = meta
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)}))


def config_from_onnx(path: str | Path) -> Any:
    """The Config an export was made with (stored in its metadata)."""
    import json

    from hhrnet.config import from_dict
    from hhrnet.export.onnx import read_metadata

    meta = read_metadata(path)
    if "config" not in meta:
        raise BackendError(f"{path} has no hhrnet metadata; pass --config")
    return from_dict(json.loads(meta["config"]))


def available() -> list[str]:
    from hhrnet.deps import tensorrt_or_none

    names = ["torch", "onnxruntime"]
    if tensorrt_or_none() is not None:
        names.append("tensorrt")
    return names


def create_backend(
    name: str = "auto",
    *,
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    engine: str | Path | None = None,
    cfg: Any = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> tuple[Any, Any]:
    """(backend, config) for the artifacts given; ``auto`` chooses from what exists and is installed."""
    if name == "auto":
        name = "tensorrt" if engine is not None else "onnxruntime" if onnx is not None else "torch"
    if name == "tensorrt":
        from hhrnet.export.trt_runtime import TensorRTBackend

        if engine is None:
            raise BackendError("the tensorrt backend needs --engine (build one with hhrnet export --format engine)")
        backend = TensorRTBackend(engine)
        return backend, cfg if cfg is not None else backend.config()
    if name == "onnxruntime":
        if onnx is None:
            raise BackendError("the onnxruntime backend needs --onnx (make one with hhrnet export --format onnx)")
        return OnnxRuntimeBackend(onnx, device=device), cfg if cfg is not None else config_from_onnx(onnx)
    if name == "torch":
        if checkpoint is None:
            raise BackendError("the torch backend needs --checkpoint")
        from hhrnet.checkpoint import load_model

        model, cfg = load_model(checkpoint, cfg)
        return TorchBackend(model, device=device, fp16=precision == "fp16"), cfg
    raise BackendError(f"unknown backend {name!r}; expected auto, torch, onnxruntime or tensorrt")


def max_output_error(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b, strict=True))
