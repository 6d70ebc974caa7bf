"""``hhrnet info``: resolved config, model size and cost, and what this machine can run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hhrnet.cli.common import SetOpt

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Preset name or official/our YAML file.")]

__all__ = ["ConfigOpt", "SetOpt", "backends_report", "info"]


def backends_report() -> list[tuple[str, str]]:
    """(component, status) for torch/CUDA, ONNX Runtime, TensorRT and Numba on this machine."""
    rows: list[tuple[str, str]] = []
    try:
        import torch

        cuda = torch.cuda.is_available()
        devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else ""
        rows.append(("torch", f"{torch.__version__}; CUDA {'yes: ' + devices if cuda else 'no'}"))
    except ImportError:
        rows.append(("torch", "not installed"))
    try:
        import onnxruntime as ort

        rows.append(("onnxruntime", f"{ort.__version__}; providers {', '.join(ort.get_available_providers())}"))
    except ImportError:
        rows.append(("onnxruntime", "not installed"))
    from hhrnet.deps import tensorrt_or_none

    trt = tensorrt_or_none()
    rows.append(("tensorrt", str(getattr(trt, "__version__", "unknown")) if trt is not None else "not installed"))
    try:
        import numba
        from numba import cuda as ncuda

        sim = " (simulator)" if ncuda.is_available() and getattr(ncuda, "simulator", None) else ""
        rows.append(("numba", f"{numba.__version__}; CUDA {'yes' + sim if ncuda.is_available() else 'no'}"))
    except ImportError:
        rows.append(("numba", "not installed"))
    return rows


def _precision_rows(art: Any) -> list[tuple[str, str]]:
    """How a reduced-precision file was made: calibration, and what the int8 guard kept in fp32 and measured."""
    rows: list[tuple[str, str]] = []
    cal = art.calibration
    if cal:
        rows.append(
            (
                "calibration",
                f"{cal.get('method')} on {cal.get('count')} images of {cal.get('images')} "
                f"(sha256 {str(cal.get('sha256', ''))[:12]}); activations {cal.get('activations')}, "
                f"target {cal.get('target')}",
            )
        )
        rows += [("calibration warning", w) for w in cal.get("warnings", [])]
    if "guard" in art.extra:
        from hhrnet.export.guard import float_summary

        lines = float_summary(art)
        kept = f"kept in {art.extra['guard'].get('kept_dtype', 'fp32')}"
        rows.append(("int8 guard", lines[0]))
        rows.append((kept, "\n".join(line.strip().removeprefix(f"{kept}: ") for line in lines[1:]) or "nothing"))
    elif art.precision != "fp32":
        kept_fp32 = ", ".join(art.extra.get("kept_fp32", [])) or "nothing"
        rows.append((f"kept in {art.extra.get('kept_dtype', 'fp32')}", kept_fp32))
    return rows


def info(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Preset or YAML (default: the artifact's own, else coco_w32_512)."),
    ] = None,
    set_: SetOpt = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Check that this checkpoint loads; its config is the base.")
    ] = None,
    onnx: Annotated[
        Path | None, typer.Option("--onnx", help="Show the contract an exported ONNX file carries.")
    ] = None,
) -> None:
    """Print the resolved config, parameter count, multiply-adds and the backends this machine has."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from hhrnet.config import dump_yaml

    console = Console(soft_wrap=True)
    status = Console(stderr=True, soft_wrap=True)
    cfg, rows = _resolve(config, set_, checkpoint, onnx, status)
    console.print(f"[bold]config[/] {cfg.preset}")
    console.print(dump_yaml(cfg).rstrip(), highlight=False, markup=False)
    table = Table(title="model", show_header=False)
    for name, value in [*_model_rows(cfg, status), *rows]:
        table.add_row(name, value)
    console.print(table)
    env = Table(title="backends on this machine", show_header=False)
    for name, value in backends_report():
        env.add_row(name, value)
    console.print(env)
    sys.stdout.flush()


def _resolve(
    config: str | None, set_: list[str] | None, checkpoint: Path | None, onnx: Path | None, status: Any
) -> tuple[Any, list[tuple[str, str]]]:
    """(config, rows about the artifact) by the precedence rule: an ONNX file's contract, a checkpoint's config,
    else the preset/YAML with the overrides."""
    from hhrnet.config import layered

    if onnx is not None:
        from hhrnet.load import artifact_codec
        from hhrnet.runtime.ort import OrtSession

        art = OrtSession(onnx).artifact
        codec, cfg = artifact_codec(art, config, set_ or [])
        shape = f", fixed {art.static_hw[0]}x{art.static_hw[1]}" if art.static_hw else ", dynamic shapes"
        rows = [("artifact", f"{onnx}: {art.graph} graph, {art.precision}{shape}"), ("codec", codec.to_json())]
        return cfg, rows + _precision_rows(art)
    if checkpoint is not None:
        from hhrnet.deps import require_torch

        require_torch("info --checkpoint")
        from hhrnet.checkpoint import load_model

        status.print(f"loading {checkpoint} ...", highlight=False)
        _, cfg = load_model(checkpoint, config=config, overrides=set_ or [])
        return cfg, [("checkpoint", f"{checkpoint}: loads (strict)")]
    return layered(None, config, set_ or []), []


def _model_rows(cfg: Any, status: Any) -> list[tuple[str, str]]:
    """Joints, parameters and multiply-adds at the input size (the last two need PyTorch)."""
    from hhrnet.deps import install_hint, torch_available

    rows = [("joints", str(cfg.model.num_joints))]
    if not torch_available():
        return rows + [("parameters", f"needs PyTorch ({install_hint('train')})")]
    from hhrnet.complexity import count_macs, count_parameters
    from hhrnet.model import build_model

    size = cfg.data.input_size
    status.print(f"counting parameters and multiply-adds at {size}x{size} ...", highlight=False)
    model = build_model(cfg)
    macs = count_macs(model, size, size) / 1e9
    return rows + [("parameters", f"{count_parameters(model):,}"), (f"multiply-adds at {size}x{size}", f"{macs:.2f} G")]
