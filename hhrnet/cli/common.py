"""Options and helpers shared by the predict / eval / bench commands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from hhrnet.config import Config


class DecoderChoice(str, Enum):
    fast = "fast"
    reference = "reference"
    cuda = "cuda"


class BackendChoice(str, Enum):
    auto = "auto"
    torch = "torch"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"


CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", help="Official or hhrnet checkpoint (.pth).")]
OnnxOpt = Annotated[Path | None, typer.Option("--onnx", help="Exported ONNX model (raw variant).")]
EngineOpt = Annotated[Path | None, typer.Option("--engine", help="TensorRT engine (hhrnet export --format engine).")]
BackendOpt = Annotated[BackendChoice, typer.Option(help="Inference backend.")]
DecoderOpt = Annotated[DecoderChoice, typer.Option(help="Decoder: fast (Numba CPU), cuda, or the reference.")]
FlipOpt = Annotated[bool | None, typer.Option("--flip/--no-flip", help="Flip test (default: config).")]
ScalesOpt = Annotated[str | None, typer.Option(help="Comma-separated test scales, e.g. 0.5,1,2 (must include 1).")]
DeviceOpt = Annotated[str, typer.Option(help="cpu or cuda (torch backend).")]


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    from hhrnet.errors import ConfigError

    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--scales must be numbers separated by commas, got {text!r}") from None


def make_network(
    cfg: Config | None, checkpoint: Path | None, onnx: Path | None, backend: BackendChoice, device: str,
    random_weights: bool = False, engine: Path | None = None,
) -> tuple[Any, Config]:  # fmt: skip
    """The network callable and the config it runs with, from a checkpoint, an ONNX file or an engine."""
    from hhrnet.errors import ConfigError

    if onnx is not None or engine is not None or backend in (BackendChoice.onnxruntime, BackendChoice.tensorrt):
        from hhrnet.export.backends import create_backend

        return create_backend(backend.value, checkpoint=checkpoint, onnx=onnx, engine=engine, cfg=cfg, device=device)
    from hhrnet.inference import torch_network

    if checkpoint is not None:
        from hhrnet.checkpoint import load_model

        model, cfg = load_model(checkpoint, cfg)
    elif random_weights:
        from hhrnet.config import preset
        from hhrnet.model import build_model

        cfg = cfg or preset("coco_w32_512")
        model = build_model(cfg)
    else:
        raise ConfigError("give --checkpoint (or --onnx); --random-weights runs an untrained network for smoke tests")
    return torch_network(model, device=device), cfg
