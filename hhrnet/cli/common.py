"""Options shared by the commands, and the one way they open a model (:func:`hhrnet.load.open_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hhrnet.choices import Backend, Decoder

if TYPE_CHECKING:
    from hhrnet.load import Loaded


ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Preset or YAML; replaces the config the checkpoint/ONNX/engine carries."),
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override section.field=value on top of the config (repeatable).")
]
CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", help="Official or hhrnet checkpoint (.pth).")]
OnnxOpt = Annotated[Path | None, typer.Option("--onnx", help="Exported ONNX model (hhrnet export).")]
EngineOpt = Annotated[Path | None, typer.Option("--engine", help="TensorRT engine (hhrnet export --format engine).")]
BackendOpt = Annotated[Backend, typer.Option(help="Inference backend.")]
DecoderOpt = Annotated[Decoder, typer.Option(help="Decoder: fast (Numba CPU), cuda, or the reference.")]
FlipOpt = Annotated[bool | None, typer.Option("--flip/--no-flip", help="Flip test (default: the config's).")]
ScalesOpt = Annotated[str | None, typer.Option(help="Comma-separated test scales, e.g. 0.5,1,2 (must include 1).")]
LetterboxOpt = Annotated[
    int | None,
    typer.Option(
        help="Pad every image into this square (multiple of 64) to batch them; departs from the official resize."
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="cpu or cuda.")]
JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Also write the numbers here as JSON, with the environment.")
]


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    from hhrnet.errors import ConfigError

    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--scales must be numbers separated by commas, got {text!r}") from None


def open_model(
    *,
    config: str | None = None,
    set_: list[str] | None = None,
    checkpoint: Path | None = None,
    onnx: Path | None = None,
    engine: Path | None = None,
    backend: Backend = "auto",
    flip: bool | None = None,
    scales: str | None = None,
    letterbox: int | None = None,
    device: str = "cpu",
    random_weights: bool = False,
) -> Loaded:
    """The model the options name, by the precedence rule: artifact config, then --config, then --set."""
    from hhrnet.load import open_model as load

    return load(
        checkpoint=checkpoint, onnx=onnx, engine=engine, config=config, overrides=set_ or [], backend=backend,
        flip=flip, scales=parse_scales(scales), letterbox=letterbox, device=device, random_weights=random_weights,
    )  # fmt: skip
