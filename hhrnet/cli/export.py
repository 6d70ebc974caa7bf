"""``hhrnet export``: an ONNX file carrying its contract, or a TensorRT engine built from one; then parity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from hhrnet.choices import CalibMethod, Graph, Int8Target, NetworkBackend, Precision
from hhrnet.cli.common import CheckpointOpt, ConfigOpt, FlipOpt, LetterboxOpt, SetOpt, check_output_file

if TYPE_CHECKING:
    from rich.console import Console


Format = Literal["onnx", "engine", "triton"]


def export(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    format: Annotated[
        Format,
        typer.Option(help="onnx; a TensorRT engine built from --onnx; or a Triton model repository (folder --out)."),
    ] = "onnx",
    graph: Annotated[
        Graph,
        typer.Option(
            help="aggregate: flip, resize, averaging and projection in the graph (runtimes only decode); "
            "peaks: NMS + top-k too; raw: network outputs only."
        ),
    ] = "aggregate",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    dynamic: Annotated[
        bool, typer.Option("--dynamic/--static", help="Dynamic batch/height/width, or a fixed letterboxed square.")
    ] = True,
    dynamo: Annotated[bool, typer.Option(help="Use the torch.export-based exporter.")] = False,
    flip: FlipOpt = None,
    letterbox: LetterboxOpt = None,
    onnx: Annotated[
        Path | None,
        typer.Option(help="ONNX input: for --format engine, or an fp32 export to convert to --precision."),
    ] = None,
    precision: Annotated[
        Precision | None,
        typer.Option(help="Precision in the ONNX graph (default fp32); an engine takes its ONNX file's."),
    ] = None,
    calib_images: Annotated[
        Path | None, typer.Option(help="int8: folder of representative images (preprocessed by the codec).")
    ] = None,
    calib_method: Annotated[CalibMethod, typer.Option(help="int8 activation range calibration.")] = "percentile",
    calib_count: Annotated[int, typer.Option(help="int8: calibrate on the first N images (by name).")] = 64,
    keep: Annotated[
        list[str] | None,
        typer.Option(
            help="Node groups (stem, heads, deconv, aggregate) or node-name regexes left in fp32 (repeatable); "
            "default: none for fp16, heads for int8; none keeps nothing."
        ),
    ] = None,
    int8_target: Annotated[
        Int8Target,
        typer.Option(help="tensorrt: int8 symmetric activations (TensorRT); cpu: uint8 (ONNX Runtime CPU kernels)."),
    ] = "tensorrt",
    guard: Annotated[
        bool,
        typer.Option(
            "--guard/--no-guard",
            help="int8 without --keep: measure each block's quantization cost and keep in fp32 the fewest blocks "
            "that hold the held-out AP loss within --max-ap-drop; --no-guard keeps the heads (a fixed rule).",
        ),
    ] = True,
    max_ap_drop: Annotated[
        float, typer.Option(help="int8 guard: AP points the int8 file may lose against fp32 on held-out images.")
    ] = 0.5,
    guard_images: Annotated[
        Path | None,
        typer.Option(help="int8 guard: held-out images (default: the --calib-images calibration did not use)."),
    ] = None,
    guard_count: Annotated[int, typer.Option(help="int8 guard: score on the first N held-out images.")] = 32,
    annotations: Annotated[
        Path | None,
        typer.Option(
            help="int8 guard: COCO keypoint file of the held-out images: true ΔAP instead of agreement with fp32."
        ),
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(help="MIN:OPT:MAX shapes, each BxCxHxW (repeatable); default: from the ONNX file's codec."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output file.")] = None,
    samples: Annotated[
        Path | None, typer.Option(help="Images for the parity check (default: the COCO samples).")
    ] = None,
    engine: Annotated[Path | None, typer.Option(help="--format triton: serve this TensorRT engine.")] = None,
    network_backend: Annotated[
        NetworkBackend | None,
        typer.Option(
            help="--format triton: Triton backend of the network (default: tensorrt for --engine, "
            "else onnxruntime; python runs it in the Python backend, e.g. under hhrnet serve)."
        ),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            help="Largest batch of images a network call takes: --format engine sizes its profile for it "
            "(default 1; a raw graph with flip runs twice the rows), --format triton batches up to it "
            "(default 8)."
        ),
    ] = None,
    server_tensorrt: Annotated[
        str | None,
        typer.Option(
            help="--format triton with --engine: the serving Triton's TensorRT version (e.g. 10.13.0); "
            "the engine must have been built with it."
        ),
    ] = None,
    batch_window_us: Annotated[int, typer.Option(help="--format triton: dynamic batching window (µs).")] = 2000,
    instances: Annotated[int, typer.Option(help="--format triton: instances of each model.")] = 1,
    triton_device: Annotated[
        str, typer.Option(help="--format triton: gpu or cpu instances for the network model.")
    ] = "gpu",
) -> None:
    """Export the model; prints ONNX Runtime vs PyTorch errors and whether decoded poses agree."""
    from rich.console import Console

    from hhrnet.errors import ConfigError

    console = Console(soft_wrap=True)
    if format == "triton" and out is None:
        raise ConfigError("--format triton writes a model repository: give --out FOLDER")
    if format != "triton":
        check_output_file("--out", out)  # before any work: a bad --out must not cost an export
    if format == "triton" and (onnx is not None or engine is not None):
        _triton(
            console,
            out,
            onnx,
            engine,
            network_backend,
            letterbox,
            max_batch or 8,
            batch_window_us,
            instances,
            triton_device,
            server_tensorrt,
        )
        return
    if format == "engine":
        from hhrnet.export.onnx import read_contract
        from hhrnet.export.tensorrt import Profile, build_engine

        if onnx is None:
            raise ConfigError("--format engine builds from an ONNX file: give --onnx MODEL.onnx")
        have = read_contract(onnx).precision
        if precision is not None and precision != have:
            raise ConfigError(
                f"{onnx} is {have}: an engine takes its ONNX file's precision (TensorRT builds strongly typed); "
                f"make a {precision} file first with hhrnet export --onnx {onnx} --precision {precision}"
            )
        profiles = [Profile.parse(p) for p in profile] if profile else None
        path = build_engine(onnx, profiles=profiles, max_batch=max_batch or 1, out=out)
        console.print(f"engine ({have}, strongly typed): {path}")
        _print_engine(console, path)
        return
    prec: Precision = precision or "fp32"
    if onnx is not None:
        if prec == "fp32":
            raise ConfigError("--onnx with --format onnx converts an fp32 export: give --precision fp16 or int8")
        path = out or onnx.with_name(f"{onnx.stem}_{prec}.onnx")
        _convert(
            console,
            onnx,
            path,
            prec,
            calib_images,
            calib_method,
            calib_count,
            keep,
            int8_target,
            Int8Guard(guard, max_ap_drop, guard_images, guard_count, annotations),
        )
        return
    from hhrnet.codec import resolve_codec
    from hhrnet.deps import require_torch

    require_torch("hhrnet export")
    from hhrnet.checkpoint import load_model
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.parity import decoded_parity
    from hhrnet.runtime.ort import OrtSession

    if checkpoint is None:
        raise ConfigError("give --checkpoint (official or hhrnet), or --onnx with --precision to convert an export")
    if prec == "int8" and calib_images is None:
        raise ConfigError("--precision int8 needs --calib-images: a folder of representative images")
    model, cfg = load_model(checkpoint, config=config, overrides=set_ or [])
    codec = resolve_codec(cfg, flip=flip, letterbox=letterbox)
    staging = None
    suffix = "" if prec == "fp32" else f"_{prec}"
    if format == "triton":  # export the ONNX file first, then write the repository from it
        import tempfile

        staging = Path(tempfile.mkdtemp(prefix="hhrnet-export-"))
        path = staging / f"model{suffix}.onnx"
    else:
        path = out or Path(f"{Path(checkpoint).stem}_{graph}{suffix}.onnx")
    size = min(codec.input_size, 256)
    console.print(f"exporting the {graph} graph of {checkpoint} ...", highlight=False)
    fp32_path = path if prec == "fp32" else path.with_name(f"{path.stem}.fp32.tmp.onnx")
    try:
        report = export_onnx(
            model,
            cfg,
            fp32_path,
            graph=graph,
            codec=codec,
            opset=opset,
            static=not dynamic,
            dynamo=dynamo,
            sample_size=(size, size),
            check_shapes=[(1, size, size), (2, size, size + 64)],
        )
        _print_export(console, report, opset)
        if prec != "fp32":
            _convert(
                console,
                fp32_path,
                path,
                prec,
                calib_images,
                calib_method,
                calib_count,
                keep,
                int8_target,
                Int8Guard(guard, max_ap_drop, guard_images, guard_count, annotations),
            )
    finally:
        if fp32_path != path:
            fp32_path.unlink(missing_ok=True)
    console.print("checking decoded poses on the sample photos (ONNX Runtime vs the exact PyTorch pipeline) ...")
    summary = decoded_parity(model, OrtSession(path), samples)
    console.print(
        f"parity on {summary.images} images: max map error {summary.max_map_error:.2e}; decoded poses "
        + (
            "identical"
            if summary.identical
            else f"differ on {summary.differing} images "
            f"(max {summary.max_pose_px:.3f} px where the person counts agree)"
        )
        + f"; max joint-value difference {summary.max_value_diff:.1e}"
    )
    if staging is not None:
        import shutil

        try:
            _triton(
                console,
                out,
                path,
                None,
                network_backend,
                letterbox,
                max_batch or 8,
                batch_window_us,
                instances,
                triton_device,
                None,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _triton(
    console: Console,
    out: Path | None,
    onnx: Path | None,
    engine: Path | None,
    backend: NetworkBackend | None,
    letterbox: int | None,
    max_batch: int,
    window_us: int,
    instances: int,
    device: str,
    server_tensorrt: str | None,
) -> None:
    """Write the Triton model repository for an ONNX file or a TensorRT engine."""
    from hhrnet.errors import ConfigError
    from hhrnet.serve.repository import ENSEMBLE, ServeOptions, write_repository

    if out is None:
        raise ConfigError("--format triton writes a model repository: give --out FOLDER")
    options = ServeOptions(max_batch_size=max_batch, max_queue_delay_us=window_us, instances=instances, device=device)
    repo = write_repository(
        out,
        onnx=onnx if engine is None else None,
        engine=engine,
        network_backend=backend,
        letterbox=letterbox,
        options=options,
        server_tensorrt=server_tensorrt,
    )
    side = repo.codec.letterbox
    console.print(
        f"wrote Triton repository {repo.path}: ensemble '{ENSEMBLE}' (image bytes -> poses), network on "
        f"the {repo.network_backend} backend, {side}x{side} letterbox, batches up to {max_batch}, "
        f"{instances} instance(s) per model",
        highlight=False,
    )
    if engine is not None:
        from hhrnet.runtime.tensorrt import read_sidecar

        built = read_sidecar(engine).get("tensorrt")
        note = f"the plan was built with TensorRT {built}: serve it with a Triton running that TensorRT"
        console.print(f"{note} (check with --server-tensorrt)", highlight=False)


def _print_engine(console: Any, path: Path) -> None:
    """The engine's profiles and builder flags, from its sidecar."""
    from hhrnet.runtime.tensorrt import read_sidecar

    meta = read_sidecar(path)
    for p in meta.get("profiles", []):
        shapes = ":".join("x".join(map(str, p[k])) for k in ("min", "opt", "max"))
        console.print(f"  profile {shapes}", highlight=False)
    states = {True: "on", False: "off", None: "absent"}
    flags = ", ".join(f"{k} {states[v]}" for k, v in meta.get("builder_flags", {}).items())
    console.print(f"  builder flags: {flags or 'none set'}; timing cache {meta.get('timing_cache') or '-'}")


def _print_export(console: Any, report: Any, opset: int) -> None:
    art = report.artifact
    shape = f"fixed {art.static_hw[0]}x{art.static_hw[1]} (letterboxed)" if art.static_hw else "dynamic B/H/W"
    console.print(f"wrote {report.path} ({report.nodes} nodes, opset {opset}, {report.graph} graph, {shape})")
    console.print(f"ops (all accepted by TensorRT's ONNX parser): {', '.join(report.op_types)}")
    for key, err in report.max_abs_error.items():
        console.print(f"  ONNX Runtime vs PyTorch {key}: max abs error {err:.2e}")


@dataclass(frozen=True)
class Int8Guard:
    """The int8 guard's options, as given on the command line."""

    enabled: bool
    max_ap_drop: float
    images: Path | None
    count: int
    annotations: Path | None


def _convert(
    console: Any,
    src: Path,
    dst: Path,
    precision: str,
    calib_images: Path | None,
    method: str,
    count: int,
    keep: list[str] | None,
    target: str,
    guard: Int8Guard,
) -> None:
    """``src`` (fp32) at ``precision`` into ``dst``; prints what stayed fp32 and how int8 was calibrated."""
    from hhrnet.errors import ConfigError
    from hhrnet.export.guard import float_summary
    from hhrnet.export.precision import convert

    if guard.count < 1:
        raise ConfigError(f"--guard-count must be positive, got {guard.count}")
    if not guard.max_ap_drop >= 0:
        raise ConfigError(f"--max-ap-drop must be >= 0 AP points, got {guard.max_ap_drop}")
    console.print(f"converting to {precision} ...")
    rep = convert(
        src,
        dst,
        precision,
        calib_images=calib_images,
        calib_count=count,
        method=method,
        keep=keep,
        target=target,
        guarded=guard.enabled,
        max_ap_drop=guard.max_ap_drop,
        guard_images=guard.images,
        guard_count=guard.count,
        annotations=guard.annotations,
        log=lambda line: console.print(line, highlight=False),
    )
    extra = rep.artifact.extra
    for line in float_summary(rep.artifact):
        console.print(line, highlight=False)
    if "guard" not in extra:
        console.print(
            f"wrote {rep.path} ({precision}; {rep.converted} nodes converted, {len(rep.kept)} kept in "
            f"fp32: {', '.join(extra.get('kept_fp32', [])) or 'none'})"
        )
    else:
        console.print(f"wrote {rep.path} ({precision}; {rep.converted} nodes quantized, {len(rep.kept)} kept in fp32)")
    cal = rep.artifact.calibration
    if cal:
        console.print(
            f"calibration: {cal['method']} on {cal['count']} images of {cal['images']} letterboxed to "
            f"{cal['letterbox']} (sha256 {cal['sha256'][:12]}); activations {cal['activations']}"
        )
        for warning in cal.get("warnings", []):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
