"""``hhrnet export``: ONNX (raw / aggregate / peaks) or a TensorRT engine, ending with a parity summary."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hhrnet.cli.common import CheckpointOpt
from hhrnet.cli.info import SetOpt


class Format(str, Enum):
    onnx = "onnx"
    engine = "engine"


class GraphVariant(str, Enum):
    raw = "raw"
    aggregate = "aggregate"
    peaks = "peaks"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


def export(
    config: Annotated[str | None, typer.Option("--config", "-c", help="Preset or YAML (ours embed it).")] = None,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    format: Annotated[Format, typer.Option(help="onnx, or a TensorRT engine built from --onnx.")] = Format.onnx,
    variant: Annotated[
        GraphVariant, typer.Option(help="What the graph computes after the network.")
    ] = GraphVariant.raw,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    dynamic: Annotated[bool, typer.Option("--dynamic/--static", help="Dynamic batch, height and width.")] = True,
    dynamo: Annotated[bool, typer.Option(help="Use the torch.export-based exporter.")] = False,
    onnx: Annotated[Path | None, typer.Option(help="ONNX input for --format engine.")] = None,
    precision: Annotated[Precision, typer.Option(help="Engine precision.")] = Precision.fp16,
    calib_images: Annotated[Path | None, typer.Option(help="Images for int8 calibration.")] = None,
    profile: Annotated[list[str] | None, typer.Option(help="MIN:OPT:MAX shapes, each BxCxHxW (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output file.")] = None,
    samples: Annotated[Path | None, typer.Option(help="Images for the decoded-pose parity check.")] = None,
) -> None:
    """Export the model; prints ONNX Runtime vs PyTorch errors and whether decoded poses are identical."""
    import warnings

    from rich.console import Console

    from hhrnet.config import resolve
    from hhrnet.errors import ConfigError

    warnings.filterwarnings("ignore", module=r"torch\.onnx.*|torch\.jit.*")
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*(Tracer|dynamic_axes).*")
    console = Console()
    if format is Format.engine:
        from hhrnet.export.tensorrt import Profile, build_engine

        if onnx is None:
            raise ConfigError("--format engine builds from an ONNX file: give --onnx MODEL.onnx")
        cfg = resolve(config, set_ or []) if config else None
        profiles = [Profile.parse(p) for p in (profile or ["1x3x256x256:1x3x512x512:1x3x1024x1024"])]
        path = build_engine(onnx, precision=precision.value, profiles=profiles, calib_images=calib_images,
                            input_size=cfg.data.input_size if cfg else 512, out=out)  # fmt: skip
        console.print(f"engine: {path}")
        return
    from hhrnet.checkpoint import load_model
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.parity import decoded_parity

    if checkpoint is None:
        raise ConfigError("give --checkpoint (official or hhrnet)")
    cfg0 = resolve(config, set_ or []) if config is not None or set_ else None
    model, cfg = load_model(checkpoint, cfg0)
    path = out or Path(f"{Path(checkpoint).stem}_{variant.value}.onnx")
    size = min(cfg.data.input_size, 256)
    shapes = [(1, size, size), (2, size, size + 64)]
    report = export_onnx(model, cfg, path, variant=variant.value, opset=opset, dynamic=dynamic, dynamo=dynamo,
                         sample_size=(size, size), check_shapes=shapes if dynamic else shapes[:1])  # fmt: skip
    console.print(f"wrote {report.path} ({report.nodes} nodes, opset {opset}, variant {variant.value})")
    console.print(f"ops (all accepted by TensorRT's ONNX parser): {', '.join(report.op_types)}")
    for key, err in report.max_abs_error.items():
        console.print(f"  ONNX Runtime vs PyTorch {key}: max abs error {err:.2e}")
    if variant is GraphVariant.raw:
        summary = decoded_parity(model, cfg, report.path, samples)
        console.print(
            f"parity on {summary.images} images: max output error {summary.max_output_error:.2e}; decoded poses "
            + ("identical positions" if summary.identical else f"differ on {summary.differing} images "
               f"(max {summary.max_pose_px:.3f} px)") + f", max joint-value difference {summary.max_value_diff:.1e}"
        )  # fmt: skip
