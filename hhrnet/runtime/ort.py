"""An exported artifact under ONNX Runtime, the portable default runtime. No torch, no onnx package.

The contract is read from the model's own metadata through ONNX Runtime (``get_modelmeta``), inside the
guard that turns a corrupt or foreign file into one clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.errors import BackendError, ConfigError, InputError
from hhrnet.runtime.artifact import Artifact


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OrtSession:
    """``(B, 3, H, W) f32 -> [outputs of the artifact's graph]`` with ONNX Runtime."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            raise BackendError(f"ONNX model not found: {p}")
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
        except Exception as exc:  # ORT raises its own types for corrupt or foreign files
            raise BackendError(
                f"ONNX Runtime cannot load {p} (not an ONNX model, or corrupt): {_first_line(exc)}"
            ) from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.artifact = Artifact.from_metadata(meta, str(p))
        self.path = p
        self.device = "cuda" if providers[0] != "CPUExecutionProvider" else "cpu"
        inputs = [(i.name, list(i.shape)) for i in self.session.get_inputs()]
        outputs = [(o.name, list(o.shape)) for o in self.session.get_outputs()]
        try:
            self.artifact.check_graph(inputs, outputs, str(p))
        except ConfigError as exc:
            raise BackendError(str(exc)) from None
        self.input_name = inputs[0][0]
        self.output_names = [n for n, _ in outputs]

    @property
    def graph(self) -> str:
        return self.artifact.graph

    @property
    def precision(self) -> str:
        return self.artifact.precision

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        static = self.artifact.static_hw
        if static is not None and tuple(batch.shape[2:]) != static:
            raise InputError(
                f"this export takes {static[0]}x{static[1]} inputs only, got {batch.shape[2]}x{batch.shape[3]}"
            )
        try:
            outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        except Exception as exc:  # ORT's runtime errors carry no useful type
            raise InputError(f"ONNX Runtime failed on a {tuple(batch.shape)} input: {_first_line(exc)}") from None
        return [np.asarray(o) for o in outs]


def open_session(path: str | Path, *, device: str = "cpu", threads: int | None = None) -> Any:
    """The session for an exported file: ONNX Runtime for ``.onnx``, TensorRT for an engine."""
    p = Path(path)
    if p.suffix in (".engine", ".plan", ".trt"):
        from hhrnet.runtime.tensorrt import TensorRTSession

        return TensorRTSession(p, device=device if device.startswith("cuda") else 0)
    return OrtSession(p, device=device, threads=threads)
