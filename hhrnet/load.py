"""Open what the user gave (a checkpoint, an ONNX file or a TensorRT engine) as a network plus its codec.

One rule for every command: the config by :func:`hhrnet.config.layered` (the config embedded in the artifact,
replaced by ``--config`` when given, then ``--set``), the codec by :func:`hhrnet.codec.resolve_codec` (for an
exported file the codec it carries is the base and only what the user changed is applied; then the explicit
test flags), checked against what an exported graph bakes in.

Only the checkpoint path imports torch: ONNX Runtime and TensorRT need nothing of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hhrnet.choices import BACKENDS
from hhrnet.codec import Codec, resolve_codec
from hhrnet.config import Config, layered
from hhrnet.errors import BackendError, ConfigError
from hhrnet.runtime.artifact import Artifact


@dataclass
class Loaded:
    """A network callable, the codec to run it with, the config both came from, and where it came from."""

    network: Any  # (B, 3, H, W) f32 -> outputs of ``graph``
    codec: Codec
    config: Config
    backend: str  # torch | onnxruntime | tensorrt
    graph: str = "raw"
    precision: str = "fp32"
    artifact: Artifact | None = None
    model: Any = None  # the torch module, for checkpoints

    def predictor(self, decoder: str = "fast") -> Any:
        from hhrnet.inference import Predictor

        return Predictor(self.network, self.codec, decoder=decoder, graph=self.graph)  # type: ignore[arg-type]


def artifact_codec(
    artifact: Artifact,
    config: str | Path | Config | None,
    overrides: Sequence[str],
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    letterbox: int | None = None,
) -> tuple[Codec, Config]:
    """(codec, config) to run an exported artifact with (:func:`~hhrnet.codec.resolve_codec`); checked against
    what its graph bakes in."""
    embedded = artifact.build_config()
    cfg = layered(embedded, config, overrides)
    codec = resolve_codec(cfg, artifact=(artifact.codec, embedded), flip=flip, scales=scales, letterbox=letterbox)
    artifact.check(codec)
    return codec, cfg


def open_model(
    *,
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    engine: str | Path | None = None,
    config: str | Path | Config | None = None,
    overrides: Sequence[str] = (),
    backend: str = "auto",
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    letterbox: int | None = None,
    device: str = "cpu",
    random_weights: bool = False,
) -> Loaded:
    """The network and codec for the artifact given; ``backend`` auto picks by what was given."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected {', '.join(BACKENDS)}")
    given = [n for n, v in (("--checkpoint", checkpoint), ("--onnx", onnx), ("--engine", engine)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"give one of --checkpoint, --onnx, --engine (got {' and '.join(given)})")
    if backend == "auto":
        backend = "tensorrt" if engine is not None else "onnxruntime" if onnx is not None else "torch"
    if backend == "tensorrt":
        if engine is None:
            raise BackendError("the tensorrt backend needs --engine (build one with hhrnet export --format engine)")
        from hhrnet.runtime.tensorrt import TensorRTSession

        session: Any = TensorRTSession(engine, device=device if device.startswith("cuda") else 0)
        codec, cfg = artifact_codec(session.artifact, config, overrides, flip, scales, letterbox)
        return Loaded(session, codec, cfg, "tensorrt", session.graph, session.artifact.precision, session.artifact)
    if backend == "onnxruntime":
        if onnx is None:
            raise BackendError("the onnxruntime backend needs --onnx (make one with hhrnet export)")
        from hhrnet.runtime.ort import OrtSession

        session = OrtSession(onnx, device=device)
        codec, cfg = artifact_codec(session.artifact, config, overrides, flip, scales, letterbox)
        return Loaded(session, codec, cfg, "onnxruntime", session.graph, session.artifact.precision, session.artifact)
    return _open_torch(checkpoint, config, overrides, flip, scales, letterbox, device, random_weights)


def _open_torch(
    checkpoint: str | Path | None,
    config: str | Path | Config | None,
    overrides: Sequence[str],
    flip: bool | None,
    scales: Sequence[float] | None,
    letterbox: int | None,
    device: str,
    random_weights: bool,
) -> Loaded:
    from hhrnet.deps import require_torch

    require_torch("the torch backend (--checkpoint)")
    from hhrnet.inference import torch_network

    if checkpoint is not None:
        from hhrnet.checkpoint import load_model

        model, cfg = load_model(checkpoint, config=config, overrides=overrides)
    elif random_weights:
        from hhrnet.model import build_model

        cfg = layered(None, config, overrides)
        model = build_model(cfg)
    else:
        raise ConfigError("give --checkpoint, --onnx or --engine (--random-weights runs an untrained network)")
    codec = resolve_codec(cfg, flip=flip, scales=scales, letterbox=letterbox)
    return Loaded(torch_network(model, device=device), codec, cfg, "torch", model=model)
