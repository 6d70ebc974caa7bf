"""``hhrnet bench latency | parity | gate``: measured numbers, never typed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hhrnet.cli.common import CheckpointOpt, OnnxOpt

bench_app = typer.Typer(help="Latency, AP-parity and the CI regression gate.", no_args_is_help=True)

CompareOpt = Annotated[Path | None, typer.Option("--compare", help="Baseline rows (JSON) to compare ratios against.")]
RegressionOpt = Annotated[str, typer.Option("--max-regression", help="Allowed ratio regression, e.g. 10%.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the rows here.")]


def _print_rows(rows: list[dict[str, object]], columns: list[str], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(r.get(c, "")) for c in columns))
    Console().print(table)


@bench_app.command("latency")
def latency(
    checkpoint: CheckpointOpt = None,
    onnx: OnnxOpt = None,
    config: Annotated[str, typer.Option("--config", "-c", help="Preset when no checkpoint is given.")] = "tiny",
    image: Annotated[Path | None, typer.Option(help="Image to time (default: a shared sample or generated).")] = None,
    repeats: Annotated[int, typer.Option(help="Warm repetitions per stage.")] = 10,
    people: Annotated[str, typer.Option(help="People counts for the decode sweep.")] = "1,5,15,30",
    batches: Annotated[str, typer.Option(help="Batch sizes for the network throughput sweep.")] = "1,8",
    json_out: JsonOpt = None,
) -> None:
    """Per-stage p50/p90/p99 for each available backend, plus decode time vs people."""
    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.latency import batch_rows, people_rows, stage_rows
    from hhrnet.checkpoint import load_model
    from hhrnet.config import resolve
    from hhrnet.export.backends import OnnxRuntimeBackend, TorchBackend
    from hhrnet.export.parity import sample_images
    from hhrnet.inference import Predictor, read_image
    from hhrnet.model import build_model

    if checkpoint is not None:
        model, cfg = load_model(checkpoint)
    else:
        cfg = resolve(config)
        model = build_model(cfg)
    img = read_image(image) if image is not None else sample_images(None, 1)[0]
    backends: list[tuple[str, Any]] = [("torch", TorchBackend(model))]
    if onnx is not None:
        backends.append(("onnxruntime", OnnxRuntimeBackend(onnx)))
    rows = []
    for name, net in backends:
        rows += stage_rows(Predictor(net, cfg), img, name, "fp32", repeats)
    predictor = Predictor(backends[0][1], cfg)
    hm, tags = predictor.maps(predictor.preprocess(img))
    rows += people_rows(hm.shape, tags.shape[-1], tuple(int(p) for p in people.split(",")), repeats)
    for name, net in backends:
        rows += batch_rows(net, name, "fp32", min(cfg.data.input_size, 512), tuple(int(b) for b in batches.split(",")))
    _print_rows([r for r in rows if r["benchmark"] == "latency"],
                ["backend", "stage", "input", "p50_ms", "p90_ms", "p99_ms", "warmup_ms"], "latency (ms)")  # fmt: skip
    _print_rows([r for r in rows if r["benchmark"] == "latency_people"], ["maps", "T", "people", "p50_ms", "p99_ms"],
                "decode vs people (ms)")  # fmt: skip
    _print_rows([r for r in rows if r["benchmark"] == "latency_batch"],
                ["backend", "input", "p50_ms", "images_per_s", "warmup_ms"], "network vs batch size")  # fmt: skip
    if json_out is not None:
        write_rows(json_out, rows)


@bench_app.command("parity")
def parity(
    checkpoint: Annotated[Path, typer.Option(help="Model to evaluate (hhrnet or official + --config).")],
    images: Annotated[Path, typer.Option(help="Image folder.")],
    annotations: Annotated[Path, typer.Option(help="Ground truth json.")],
    onnx: OnnxOpt = None,
    max_images: Annotated[int | None, typer.Option(help="First N images only.")] = None,
    json_out: JsonOpt = None,
) -> None:
    """ΔAP and agreement AP of every backend x decoder against PyTorch fp32 + the reference decoder; gated."""
    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.parity import Variant, run
    from hhrnet.checkpoint import load_model
    from hhrnet.export.backends import OnnxRuntimeBackend, TorchBackend

    model, cfg = load_model(checkpoint)
    torch_net = TorchBackend(model)
    variants = [Variant("torch fp32 + reference", torch_net, "reference", "exact"),
                Variant("torch fp32 + fast", torch_net, "fast", "exact")]  # fmt: skip
    if onnx is not None:
        variants.append(Variant("onnxruntime fp32 + fast", OnnxRuntimeBackend(onnx), "fast", "fp32"))
    import os

    from numba import cuda

    if cuda.is_available() and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        variants.append(Variant("torch fp32 + cuda", torch_net, "cuda", "exact"))
    rows = run(variants, cfg, images, annotations, max_images=max_images)
    _print_rows(rows, ["variant", "AP", "delta_AP_points", "agreement_AP", "gate", "passed"], "AP parity")
    if json_out is not None:
        write_rows(json_out, rows)
    if not all(r["passed"] for r in rows):
        raise typer.Exit(1)


@bench_app.command("gate")
def gate(
    compare: CompareOpt = None,
    max_regression: RegressionOpt = "50%",
    update: Annotated[bool, typer.Option(help="Store the measured rows as the new baseline.")] = False,
) -> None:
    """CI gate: fast paths identical to their references, same-run speedups within --max-regression."""
    from hhrnet.benchmarks import gate as gate_mod

    argv = ["--max-regression", max_regression]
    if compare is not None:
        argv += ["--baseline", str(compare)]
    if update:
        argv.append("--update")
    code = gate_mod.main(argv)
    if code:
        raise typer.Exit(code)
