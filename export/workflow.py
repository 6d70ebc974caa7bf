"""What ``hhrnet export`` does, as one library call: export -> convert -> parity -> Triton repository.

:class:`ExportRequest` holds the command's options; :func:`run_export` picks the route and reports every step
through ``log`` (one line each), so the command only parses options and prints. Routes:

* ``--format onnx`` with ``--checkpoint``: export the fp32 graph (:func:`hhrnet.export.onnx.export_onnx`),
  convert it to ``--precision`` in place of the fp32 file (:func:`hhrnet.export.precision.convert`), then check
  the decoded poses of ONNX Runtime against the exact PyTorch pipeline on sample photos;
* ``--format onnx`` with ``--onnx``: convert an fp32 export to fp16 / int8;
* ``--format engine``: a strongly typed TensorRT engine from an ONNX file (its precision is the file's);
* ``--format triton``: a model repository from an ONNX file or engine, or from a checkpoint exported first.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hhrnet.errors import ConfigError
from hhrnet.graphs import Graph

Log = Callable[[str], None]


@dataclass(frozen=True)
class Int8Guard:
    """The int8 guard's options, as given on the command line."""

    enabled: bool = True
    max_ap_drop: float = 0.5
    images: Path | None = None
    count: int = 32
    annotations: Path | None = None

    def check(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--guard-count must be positive, got {self.count}")
        if not self.max_ap_drop >= 0:
            raise ConfigError(f"--max-ap-drop must be >= 0 AP points, got {self.max_ap_drop}")


@dataclass(frozen=True)
class Conversion:
    """How an fp32 export becomes fp16 / int8."""

    precision: str | None = None  # None: fp32 (an engine: its ONNX file's)
    calib_images: Path | None = None
    calib_method: str = "percentile"
    calib_count: int = 64
    keep: Sequence[str] | None = None
    int8_target: str = "tensorrt"
    guard: Int8Guard = field(default_factory=Int8Guard)


@dataclass(frozen=True)
class TritonOptions:
    network_backend: str | None = None
    max_batch: int = 8
    batch_window_us: int = 2000
    instances: int = 1
    device: str = "gpu"
    server_tensorrt: str | None = None


@dataclass(frozen=True)
class ExportRequest:
    """Everything ``hhrnet export`` was asked to do."""

    format: str = "onnx"  # onnx | engine | triton
    checkpoint: Path | None = None
    onnx: Path | None = None
    engine: Path | None = None
    config: str | None = None
    overrides: Sequence[str] = ()
    graph: Graph = "aggregate"
    opset: int = 17
    dynamic: bool = True
    dynamo: bool = False
    flip: bool | None = None
    letterbox: int | None = None
    conversion: Conversion = field(default_factory=Conversion)
    profiles: Sequence[str] | None = None  # MIN:OPT:MAX, each BxCxHxW
    max_batch: int | None = None
    out: Path | None = None
    samples: Path | None = None
    triton: TritonOptions = field(default_factory=TritonOptions)


def run_export(req: ExportRequest, log: Log) -> Path:
    """Carry out ``req``; returns the file or folder written."""
    if req.format == "triton" and req.out is None:
        raise ConfigError("--format triton writes a model repository: give --out FOLDER")
    if req.format == "triton" and (req.onnx is not None or req.engine is not None):
        return write_triton(req.out, req.onnx, req.engine, req.letterbox, req.triton, log)  # type: ignore[arg-type]
    if req.format == "engine":
        return build_engine_file(req, log)
    conv = req.conversion
    if req.onnx is not None:
        if conv.precision in (None, "fp32"):
            raise ConfigError("--onnx with --format onnx converts an fp32 export: give --precision fp16 or int8")
        path = req.out or req.onnx.with_name(f"{req.onnx.stem}_{conv.precision}.onnx")
        convert_file(req.onnx, path, conv, log)
        return path
    if req.checkpoint is None:
        raise ConfigError("give --checkpoint (official or hhrnet), or --onnx with --precision to convert an export")
    if conv.precision == "int8" and conv.calib_images is None:
        raise ConfigError("--precision int8 needs --calib-images: a folder of representative images")
    if req.format != "triton":
        return export_checkpoint(req, req.out or Path(f"{req.checkpoint.stem}_{req.graph}{_suffix(conv)}.onnx"), log)
    staging = Path(tempfile.mkdtemp(prefix="hhrnet-export-"))  # export the ONNX file first, then the repository
    try:
        path = export_checkpoint(req, staging / f"model{_suffix(conv)}.onnx", log)
        return write_triton(req.out, path, None, req.letterbox, req.triton, log)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _suffix(conv: Conversion) -> str:
    return "" if conv.precision in (None, "fp32") else f"_{conv.precision}"


def export_checkpoint(req: ExportRequest, path: Path, log: Log) -> Path:
    """Checkpoint -> ONNX at ``path`` (converted when a precision is asked), then the decoded-pose parity check."""
    from hhrnet.checkpoint import load_model
    from hhrnet.codec import resolve_codec
    from hhrnet.deps import require_torch

    require_torch("hhrnet export")
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.parity import decoded_parity
    from hhrnet.runtime.ort import OrtSession

    model, cfg = load_model(req.checkpoint, config=req.config, overrides=list(req.overrides))  # type: ignore[arg-type]
    codec = resolve_codec(cfg, flip=req.flip, letterbox=req.letterbox)
    size = min(codec.input_size, 256)
    log(f"exporting the {req.graph} graph of {req.checkpoint} ...")
    fp32_path = path if req.conversion.precision in (None, "fp32") else path.with_name(f"{path.stem}.fp32.tmp.onnx")
    try:
        report = export_onnx(
            model,
            cfg,
            fp32_path,
            graph=req.graph,
            codec=codec,
            opset=req.opset,
            static=not req.dynamic,
            dynamo=req.dynamo,
            sample_size=(size, size),
            check_shapes=[(1, size, size), (2, size, size + 64)],
        )
        for line in export_lines(report):
            log(line)
        if fp32_path != path:
            convert_file(fp32_path, path, req.conversion, log)
    finally:
        if fp32_path != path:
            fp32_path.unlink(missing_ok=True)
    log("checking decoded poses on the sample photos (ONNX Runtime vs the exact PyTorch pipeline) ...")
    s = decoded_parity(model, OrtSession(path), req.samples)
    agree = "identical"
    if not s.identical:
        agree = f"differ on {s.differing} images (max {s.max_pose_px:.3f} px where the person counts agree)"
    log(
        f"parity on {s.images} images: max map error {s.max_map_error:.2e}; decoded poses {agree}; max joint-value "
        f"difference {s.max_value_diff:.1e}"
    )
    return path


def export_lines(report: Any) -> list[str]:
    art = report.artifact
    shape = f"fixed {art.static_hw[0]}x{art.static_hw[1]} (letterboxed)" if art.static_hw else "dynamic B/H/W"
    lines = [
        f"wrote {report.path} ({report.nodes} nodes, opset {report.opset}, {report.graph} graph, {shape})",
        f"ops (all accepted by TensorRT's ONNX parser): {', '.join(report.op_types)}",
    ]
    return lines + [f"  ONNX Runtime vs PyTorch {k}: max abs error {e:.2e}" for k, e in report.max_abs_error.items()]


def convert_file(src: Path, dst: Path, conv: Conversion, log: Log) -> Any:
    """``src`` (fp32) at ``conv.precision`` into ``dst``; logs what stayed in float and how int8 was calibrated."""
    from hhrnet.export.guard import float_summary
    from hhrnet.export.precision import convert

    guard = conv.guard
    guard.check()
    log(f"converting to {conv.precision} ...")
    rep = convert(
        src,
        dst,
        conv.precision or "fp32",
        calib_images=conv.calib_images,
        calib_count=conv.calib_count,
        method=conv.calib_method,
        keep=conv.keep,
        target=conv.int8_target,
        guarded=guard.enabled,
        max_ap_drop=guard.max_ap_drop,
        guard_images=guard.images,
        guard_count=guard.count,
        annotations=guard.annotations,
        log=log,
    )
    extra = rep.artifact.extra
    for line in float_summary(rep.artifact):
        log(line)
    dtype = extra.get("kept_dtype", "fp32")
    if "guard" not in extra:
        kept = ", ".join(extra.get("kept_fp32", [])) or "none"
        converted = f"{rep.converted} nodes converted, {len(rep.kept)} kept in {dtype}"
        log(f"wrote {rep.path} ({conv.precision}; {converted}: {kept})")
    else:
        log(f"wrote {rep.path} ({conv.precision}; {rep.converted} nodes quantized, {len(rep.kept)} kept in {dtype})")
    cal = rep.artifact.calibration
    if cal:
        log(
            f"calibration: {cal['method']} on {cal['count']} images of {cal['images']} letterboxed to "
            f"{cal['letterbox']} (sha256 {cal['sha256'][:12]}); activations {cal['activations']}"
        )
        for warning in cal.get("warnings", []):
            log(f"warning: {warning}")
    return rep


def build_engine_file(req: ExportRequest, log: Log) -> Path:
    """A strongly typed TensorRT engine from ``req.onnx`` (its precision is the ONNX file's)."""
    from hhrnet.export.onnx import read_contract
    from hhrnet.export.tensorrt import Profile, build_engine
    from hhrnet.runtime.tensorrt import read_sidecar

    if req.onnx is None:
        raise ConfigError("--format engine builds from an ONNX file: give --onnx MODEL.onnx")
    have = read_contract(req.onnx).precision
    want = req.conversion.precision
    if want is not None and want != have:
        raise ConfigError(
            f"{req.onnx} is {have}: an engine takes its ONNX file's precision (TensorRT builds strongly typed); "
            f"make a {want} file first with hhrnet export --onnx {req.onnx} --precision {want}"
        )
    profiles = [Profile.parse(p) for p in req.profiles] if req.profiles else None
    path = build_engine(req.onnx, profiles=profiles, max_batch=req.max_batch or 1, out=req.out)
    log(f"engine ({have}, strongly typed): {path}")
    meta = read_sidecar(path)
    for p in meta.get("profiles", []):
        log("  profile " + ":".join("x".join(map(str, p[k])) for k in ("min", "opt", "max")))
    states = {True: "on", False: "off", None: "absent"}
    flags = ", ".join(f"{k} {states[v]}" for k, v in meta.get("builder_flags", {}).items())
    log(f"  builder flags: {flags or 'none set'}; timing cache {meta.get('timing_cache') or '-'}")
    return path


def write_triton(
    out: Path, onnx: Path | None, engine: Path | None, letterbox: int | None, opts: TritonOptions, log: Log
) -> Path:
    """The Triton model repository for an ONNX file or a TensorRT engine."""
    from hhrnet.serve.repository import ENSEMBLE, ServeOptions, write_repository

    options = ServeOptions(
        max_batch_size=opts.max_batch,
        max_queue_delay_us=opts.batch_window_us,
        instances=opts.instances,
        device=opts.device,
    )
    repo = write_repository(
        out,
        onnx=onnx if engine is None else None,
        engine=engine,
        network_backend=opts.network_backend,  # type: ignore[arg-type]
        letterbox=letterbox,
        options=options,
        server_tensorrt=opts.server_tensorrt,
    )
    side = repo.codec.letterbox
    log(
        f"wrote Triton repository {repo.path}: ensemble '{ENSEMBLE}' (image bytes -> poses), network on the "
        f"{repo.network_backend} backend, {side}x{side} letterbox, batches up to {opts.max_batch}, "
        f"{opts.instances} instance(s) per model"
    )
    if engine is not None:
        from hhrnet.runtime.tensorrt import read_sidecar

        built = read_sidecar(engine).get("tensorrt")
        log(
            f"the plan was built with TensorRT {built}: serve it with a Triton running that TensorRT "
            "(check with --server-tensorrt)"
        )
    return repo.path
