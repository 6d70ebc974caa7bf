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


MaxImagePixelsOpt = Annotated[
    int, typer.Option(help="Refuse images larger than this (width x height), read from the header before decoding.")
]
MaxImageBytesOpt = Annotated[int, typer.Option(help="Refuse image files larger than this (bytes).")]


def check_number(flag: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """ConfigError naming ``flag`` when ``value`` is not finite or outside [low, high]."""
    import math

    from hhrnet.errors import ConfigError

    if not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
        raise ConfigError(f"{flag}={value} is out of range ({span})")


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    import math

    from hhrnet.errors import ConfigError

    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--scales must be numbers separated by commas, got {text!r}") from None
    if not scales or not all(math.isfinite(s) and 0 < s <= 8 for s in scales):
        raise ConfigError(f"--scales must be finite numbers in (0, 8], got {text!r}")
    return scales


def check_output_file(flag: str, path: Path | None) -> None:
    """Before any work: ConfigError naming ``flag`` when ``path`` is a folder or cannot be written."""
    if path is None:
        return
    from hhrnet.errors import ConfigError
    from hhrnet.io import check_writable_file

    try:
        check_writable_file(path)
    except ConfigError as exc:
        raise ConfigError(f"{flag} {exc}") from None


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
        checkpoint=checkpoint,
        onnx=onnx,
        engine=engine,
        config=config,
        overrides=set_ or [],
        backend=backend,
        flip=flip,
        scales=parse_scales(scales),
        letterbox=letterbox,
        device=device,
        random_weights=random_weights,
    )
