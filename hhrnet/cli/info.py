"""``hhrnet info``: resolved config, model size and cost, and what this machine can run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Preset name or official/our YAML file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override: section.field=value (repeatable).")]


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


def info(
    config: ConfigOpt = "coco_w32_512",
    set_: SetOpt = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Check that this checkpoint loads into the model.")
    ] = None,
) -> None:
    """Print the resolved config, parameter count, multiply-adds and the backends this machine has."""
    from rich.console import Console
    from rich.table import Table

    from hhrnet.complexity import count_macs, count_parameters
    from hhrnet.config import dump_yaml, resolve
    from hhrnet.model import build_model

    cfg = resolve(config, set_ or [])
    console = Console()
    console.print(f"[bold]config[/] {cfg.preset}")
    console.print(dump_yaml(cfg).rstrip(), highlight=False)
    model = build_model(cfg)
    size = cfg.data.input_size
    table = Table(title="model", show_header=False)
    table.add_row("joints", str(cfg.model.num_joints))
    table.add_row("parameters", f"{count_parameters(model):,}")
    table.add_row(f"multiply-adds at {size}x{size}", f"{count_macs(model, size, size) / 1e9:.2f} G")
    if checkpoint is not None:
        from hhrnet.checkpoint import load_weights

        load_weights(model, checkpoint, strict=True)
        table.add_row("checkpoint", f"{checkpoint}: loads (strict)")
    console.print(table)
    env = Table(title="backends on this machine", show_header=False)
    for name, status in backends_report():
        env.add_row(name, status)
    console.print(env)
